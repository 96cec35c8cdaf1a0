"""Live engine end to end through ZeroMQ: frames/s with 1 and 2 workers, lag, and memory per worker.

Run: ``python benchmarks/bench_stream.py [--frames N] [--shape SLOW FAST]``. A simulator thread
sends pre-generated Eiger Stream V1 frames (bs32-lz4, uint32) as fast as the workers take them; the
runner analyses them with 1 and then 2 worker processes. Reported: frames analysed per second,
drops, final lag, and the peak resident memory of each worker (from /proc), which the bounded
queues keep at a few frames plus fixed overhead. This machine has 2 cores shared by the sender,
the collector and the workers, so 2 workers mostly lower the lag here.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(workers: int, frames: list, frame_mb: float) -> None:
    """One run of the runner with *workers* processes against a simulator thread."""
    import multiprocessing as mp

    import zmq

    from mxcat.live.runner import run
    from mxcat.live.simulate import Geometry, serve

    ctx = zmq.Context()
    with ctx.socket(zmq.PULL) as probe:
        port = probe.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    sent: dict = {}
    t = threading.Thread(target=lambda: sent.update(serve(endpoint, frames=frames, protocol="eiger1", ctx=ctx,
                                                              encoding="bs32-lz4<", geometry=Geometry(distance=0.2),
                                                              send_timeout=60.0)), daemon=True)
    peaks: dict[int, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            for child in mp.active_children():
                if child.pid:
                    rss = peak_rss_mb(child.pid)
                    if rss:
                        peaks[child.pid] = max(peaks.get(child.pid, 0.0), rss)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    t0 = time.perf_counter()
    s = run(endpoint, protocol="eiger1", workers=workers, max_series=1, timeout=300, ready=t.start, queue_size=4)
    dt = time.perf_counter() - t0
    stop.set()
    t.join(timeout=30)
    ctx.term()
    series = s.series[0] if s.series else None
    n = series.n_frames if series else 0
    mem = ", ".join(f"{v:.0f}" for v in peaks.values()) or "n/a"
    print(f"workers={workers}: {n} frames analysed, {series.n_dropped if series else '?'} dropped, "
          f"{series.frame_rate or 0:.1f} frames/s (collector), lag at end {series.lag or 0:.2f} s, wall {dt:.1f} s; "
          f"peak RSS per worker {mem} MiB (queue bound 4 frames = {4 * frame_mb:.0f} MiB)")


def main() -> None:
    from mxcat.live.simulate import synthetic_frame

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--shape", type=int, nargs=2, default=(1062, 1028), help="default: an EIGER2 1M")
    args = ap.parse_args()
    shape = tuple(args.shape)
    frames = [synthetic_frame(shape=shape, dtype="<u4", seed=(3, i), n_spots=80)[0] for i in range(min(args.frames, 20))]
    frames = [frames[i % len(frames)] for i in range(args.frames)]
    frame_mb = frames[0].nbytes / 2**20
    print(f"# live engine through ZeroMQ: {args.frames} frames of {shape[0]}x{shape[1]} uint32 ({frame_mb:.1f} MiB each), "
          f"Stream V1 bs32-lz4")
    for workers in (1, 2):
        measure(workers, frames, frame_mb)
    print(f"(cores: {os.cpu_count()})")


if __name__ == "__main__":
    main()
