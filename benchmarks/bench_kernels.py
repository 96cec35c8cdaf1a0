"""Per-frame analysis cost of the live kernels (spots + statistics + radial profile), one core.

Run: ``taskset -c 0 python benchmarks/bench_kernels.py [--sizes 4M 16M] [--repeat 5]``

Frames come from ``../shared/bench/synth.py`` (uint32 Eiger 4M 2167x2070 and 16M 4371x4150,
Poisson background, an ice ring, Gaussian spots, module gaps at the sentinel). Constants are
built once per size; the first call (numba compile or cache load) is excluded. Prints ms/frame
per stage and in total (median of ``--repeat``); no asserts. Quote ratios to the peers run in the
same session (``../shared/bench/run_peers.sh``): absolute times drift on shared machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for cand in (ROOT.parent / "shared" / "bench", ROOT.parent / "bench"):
    if (cand / "synth.py").exists():
        sys.path.insert(0, str(cand))
        break

from mxcat.live.kernels import SeriesConstants, find_spots, frame_statistics, radial_profile, spot_separations  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["4M", "16M"])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    try:
        import synth
    except ImportError:
        print("synth.py not found (expected in ../shared/bench); nothing to do")
        return
    for size in args.sizes:
        img, truth, (cy, cx) = synth.frame(size, seed=0)
        c = SeriesConstants.build(shape=img.shape, beam_centre_x=cx + 0.5, beam_centre_y=cy + 0.5, pixel_size_x=75e-6,
                                  pixel_size_y=75e-6, distance=0.2, wavelength=0.98)
        stages: dict[str, list[float]] = {"spots": [], "stats": [], "radial": [], "separation": [], "total": []}
        for k in range(args.repeat + 1):
            t0 = time.perf_counter()
            spots = find_spots(img, constants=c)
            t1 = time.perf_counter()
            frame_statistics(img, spots=spots, constants=c, saturation_value=2**20)
            t2 = time.perf_counter()
            radial_profile(img, constants=c)
            t3 = time.perf_counter()
            spot_separations(x=spots.x, y=spots.y, area_px=c.n_ok)
            t4 = time.perf_counter()
            if k == 0:
                continue  # warm-up
            for name, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=False):
                stages[name].append(dt * 1e3)
        med = {k: statistics.median(v) for k, v in stages.items()}
        print(f"{size} {img.shape[0]}x{img.shape[1]} {img.dtype}: {spots.n} spots (truth {len(truth)}); "
              + ", ".join(f"{k} {v:.1f}" for k, v in med.items()) + " ms/frame")


if __name__ == "__main__":
    main()
