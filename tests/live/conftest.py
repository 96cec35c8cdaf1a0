"""Shared fixtures of the live-engine tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def warm_kernels() -> None:
    """Compile the live kernels once in the test process before workers start. On a fresh checkout the
    numba cache is empty and every worker process would compile them itself in its warm-up (tens of
    seconds on a loaded two-core machine), eating into the runner tests' time limits; compiled here,
    the cache on disk is filled and the workers only load it."""
    from mxcat.live.runner import _warm_up

    _warm_up(bands=True)
