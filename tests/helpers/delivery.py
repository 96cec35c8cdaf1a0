"""Shared test step: drain an outbox into a sink that has just come back."""

from __future__ import annotations

import time


def drain_until_delivered(deliverer, box, sink: str, *, timeout: float = 20.0, pause: float = 0.05) -> int:
    """Call ``deliverer.drain()`` until nothing is pending for *sink* (or *timeout* seconds); the
    number of envelopes delivered meanwhile. Backoff delays make the first drains return nothing."""
    deadline = time.monotonic() + timeout
    delivered = 0
    while time.monotonic() < deadline and box.pending(sink):
        time.sleep(pause)
        delivered += deliverer.drain().delivered
    return delivered
