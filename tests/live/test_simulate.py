"""The simulator: deterministic synthetic frames with true spots and gaps; the command line in a subprocess."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from mxcat.live.simulate import gap_mask, synthetic_frame
from mxcat.live.sources.eiger1 import Eiger1Source


def test_synthetic_frame_is_deterministic_with_spots_and_gaps():
    a, spots = synthetic_frame(shape=(600, 1100), dtype="uint16", seed=5, n_spots=20)
    b, spots2 = synthetic_frame(shape=(600, 1100), dtype="uint16", seed=5, n_spots=20)
    assert np.array_equal(a, b) and spots == spots2 and len(spots) == 20
    gaps = gap_mask((600, 1100))
    assert gaps[514:551].all() and gaps[:, 1030:1040].all() and (a[gaps] == 0xFFFF).all()
    for s in spots:
        assert a[int(round(s.y)), int(round(s.x))] > 5  # a spot stands out of a 0.5-count background
    assert synthetic_frame(shape=(50, 50), seed=6)[0].dtype == np.uint32


def test_command_line_in_subprocess(tmp_path):
    ep = f"ipc://{tmp_path}/cli.ipc"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mxcat.live.simulate",
            ep,
            "--n-images",
            "3",
            "--shape",
            "64",
            "128",
            "--encoding",
            "bs16-lz4<",
            "--seed",
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with Eiger1Source(ep, timeout=15, stop_after_end=True) as src:
            items = list(src)
        assert proc.wait(15) == 0 and "sent 3 frames" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    want = synthetic_frame(shape=(64, 128), dtype="uint16", seed=(2, 0, 2), n_spots=50)[0]
    assert np.array_equal(items[3].data, want) and items[-1].n_received == 3
