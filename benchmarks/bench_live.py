"""Live per-frame cost against the decode floor and the peers, plus detection quality, one core.

Run: ``taskset -c 0 python benchmarks/bench_live.py [--sizes 4M 16M] [--repeat 5] [--no-peers]``

In one run: bslz4 decode alone (bitshuffle, the floor), analysis of the decoded frame alone, full
analysis on one core from the received bslz4 bytes to the results (for ``radial`` decoding and
analysing a band of rows at a time, ``analyse_bslz4_radial``, into a reused frame buffer, as the
live workers do with the Eiger source option ``defer_bslz4``; for ``dispersion`` decoding, then
``analyse_frame``) and the ratio full/decode, beside it (dec,ana)/decode for decoding whole into a
new array and then analysing (the workers' default, where the decoding runs in the receiver
thread); medians over rounds in which all take turns, so a drifting machine shifts them alike;
on synthetic Eiger frames (``../shared/bench/synth.py``) and on the real corpus frame; when the
peer environments exist (``$PEERS_DIR``, default ``<tmp>/mxcat-peers``, built by
``run_peers.sh``) OM peakfinder8 (normal, fast) and pyFAI ``integrate1d`` run in subprocesses on
the same frames and the ratios mxcat/peer are printed. Detection: recall of true spots with peak
SNR >= 10 (peak amplitude / sqrt(local background)) within 1.5 px, false spots on spot-free
frames, and on the real frame mxcat's spot count beside peakfinder8's. Times are medians; quote
ratios (shared machines drift). No asserts.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH = next((c for c in (ROOT.parent / "shared" / "bench", ROOT.parent / "bench") if (c / "synth.py").exists()), None)
if BENCH:
    sys.path.insert(0, str(BENCH))
CORPUS = ROOT.parent / "shared" / "corpus" / "stream" / "hdf5plugin_eiger-4m_bslz4_uint32_diffraction_1frame.h5"
PEERS = Path(os.environ.get("PEERS_DIR", Path(tempfile.gettempdir()) / "mxcat-peers"))

from mxcat.live.kernels import SeriesConstants  # noqa: E402
from mxcat.live.kernels.fused import Workspace, analyse_frame  # noqa: E402
from mxcat.live.kernels.radial_spots import RadialWorkspace, analyse_bslz4_radial, analyse_frame_radial  # noqa: E402
from mxcat.live.sources.decode import encode_bslz4, prepare_bslz4  # noqa: E402

METHODS = {
    "radial": (RadialWorkspace, analyse_frame_radial),
    "dispersion": (Workspace, analyse_frame),
}
"""The live engine's default (peakfinder8-style radial thresholds) and DIALS' dispersion method."""


def interleaved(fns, n):
    """Times (ms) of each callable in each of ``n`` rounds in which they take turns, so that a
    machine whose speed drifts (shared cores) shifts them all alike."""
    for f in fns.values():
        f()
    ts = {k: [] for k in fns}
    for _ in range(n):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            ts[k].append((time.perf_counter() - t) * 1e3)
    return ts


def measure(name, img, consts, repeat, bitshuffle, method="radial"):
    make_ws, analyse_frame = METHODS[method]
    blob = encode_bslz4(img)  # the DECTRIS framing, 8 kB blocks as the detector writes them
    comp = np.frombuffer(blob, np.uint8, offset=12)
    ws = make_ws()

    def decode():
        return bitshuffle.decompress_lz4(comp, img.shape, img.dtype)

    def engine():  # one core from the received bytes to the results
        if method == "radial":
            return analyse_bslz4_radial(prepare_bslz4(blob, img.dtype, img.shape), constants=consts, workspace=ws,
                                        out=ws.frame_buffer(img.shape, img.dtype))
        return analyse_frame(decode(), constants=consts, workspace=ws)

    ts = interleaved(dict(decode=decode, analysis=lambda: analyse_frame(img, constants=consts, workspace=ws),
                          separate=lambda: analyse_frame(decode(), constants=consts, workspace=ws), full=engine),
                     repeat)
    spots = analyse_frame(img, constants=consts, workspace=ws)[0]

    def ratio(k):
        return statistics.median(f / d for f, d in zip(ts[k], ts["decode"], strict=True))

    return dict(name=f"{name} {method[:4]}", decode=statistics.median(ts["decode"]),
                analysis=statistics.median(ts["analysis"]), full=statistics.median(ts["full"]), ratio=ratio("full"),
                separate=ratio("separate"), n_spots=spots.n, method=method, frame=name)


def peers(size):
    out = {}
    if not BENCH or not (PEERS / "main" / "bin" / "python").exists():
        return out
    jobs = [("main", "pyfai")]
    if (PEERS / "om" / "bin" / "python").exists():
        jobs.append(("om", "om"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for venv, what in jobs:
        try:
            r = subprocess.run([str(PEERS / venv / "bin" / "python"), "peers.py", size, what], cwd=BENCH, env=env,
                               capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            continue
        for line in r.stdout.splitlines():
            m = re.match(rf"{size} (.+?): ([\d.]+) ms(?:\s+\((\d+) peaks)?", line)
            if m:
                out[m.group(1)] = (float(m.group(2)), int(m.group(3)) if m.group(3) else None)
    return out


OM_REAL = """
import sys, numpy as np
from om.algorithms.crystallography import Peakfinder8PeakDetection
img = np.load(sys.argv[1]); ny, nx = img.shape
mask = img == np.iinfo(img.dtype).max
data = img.astype(np.float32); data[mask] = 0
yy, xx = np.mgrid[0:ny, 0:nx]
rmap = np.hypot(yy - ny / 2, xx - nx / 2).astype(np.float32)
for fast in (False, True):
    params = dict(max_num_peaks=20000, adc_threshold=0.0, minimum_snr=6.0, min_pixel_count=2, max_pixel_count=200,
                  local_bg_radius=3, min_res=0, max_res=100000, bad_pixel_map_filename=None,
                  bad_pixel_map_hdf5_path=None, fast_mode=fast)
    pf = Peakfinder8PeakDetection(radius_pixel_map=rmap, layout_info=dict(asic_nx=nx, asic_ny=ny, nasics_x=1, nasics_y=1),
                                  crystallography_parameters=params)
    pf._bad_pixel_map = (~mask).astype(np.int8)
    print("fast" if fast else "normal", pf.find_peaks(data=data)["num_peaks"])
"""


def om_real_counts(img):
    py = PEERS / "om" / "bin" / "python"
    if not py.exists():
        return {}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.npy"
        np.save(p, img)
        r = subprocess.run([str(py), "-c", OM_REAL, str(p)], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    return {k: int(v) for k, v in (ln.split() for ln in r.stdout.splitlines() if ln.strip())}


def synth_consts(img, cy, cx):
    return SeriesConstants.build(shape=img.shape, beam_centre_x=cx + 0.5, beam_centre_y=cy + 0.5, pixel_size_x=75e-6,
                                 pixel_size_y=75e-6, distance=0.2, wavelength=0.98)


def quality(synth, size, n_seeds=3, method="radial"):
    """Recall for peak SNR >= 10 and false spots per spot-free frame (synth's background model)."""
    make_ws, analyse_frame = METHODS[method]
    found = total = 0
    false = []
    ws = make_ws()
    for seed in range(n_seeds):
        img, truth, (cy, cx) = synth.frame(size, seed=100 + seed)
        c = synth_consts(img, cy, cx)
        s = analyse_frame(img, constants=c, workspace=ws)[0]
        ny, nx = img.shape
        sy, sx, amp = truth.T
        r = np.hypot(sy - cy, sx - cx)
        bg = 0.4 + 3.0 * np.exp(-r / (0.25 * nx)) + 2.0 * np.exp(-0.5 * ((r - 0.31 * nx) / 4.0) ** 2)
        iy, ix = sy.astype(int), sx.astype(int)
        # exclude spots touching a module gap (sentinel) within their 7x7 footprint
        clean = np.array([not (img[y - 3:y + 4, x - 3:x + 4] == np.iinfo(img.dtype).max).any() for y, x in zip(iy, ix, strict=False)])
        sel = clean & (amp / np.sqrt(bg) >= 10)
        px, py = s.x - 0.5, s.y - 0.5
        for y, x in zip(sy[sel], sx[sel], strict=False):
            total += 1
            found += bool(s.n) and np.min(np.hypot(px - x, py - y)) < 1.5
        img0, _, _ = synth.frame(size, n_spots=0, seed=200 + seed)
        false.append(analyse_frame(img0, constants=c, workspace=ws)[0].n)
    return found / max(total, 1), total, false


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["4M", "16M"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = ap.parse_args()
    import bitshuffle
    rows = []
    peer = {}
    synth = None
    if BENCH:
        import synth
        for size in args.sizes:
            img, truth, (cy, cx) = synth.frame(size, seed=0)
            for m in args.methods:
                rows.append(measure(f"synth {size}", img, synth_consts(img, cy, cx), args.repeat, bitshuffle, m))
            if not args.no_peers:
                peer[f"synth {size}"] = peers(size)
    real = None
    if CORPUS.exists():
        import h5py
        import hdf5plugin  # noqa: F401
        with h5py.File(CORPUS) as f:
            real = np.ascontiguousarray(f["entry/data/data"][0])
        c = SeriesConstants.build_without_geometry(shape=real.shape)
        for m in args.methods:
            rows.append(measure("real 4M", real, c, args.repeat, bitshuffle, m))
    print(f"{'frame':15} {'decode':>8} {'analysis':>9} {'full':>8} {'full/dec':>9} {'(dec,ana)':>9} {'spots':>6}"
          f"   vs peers (mxcat full / peer)")
    for r in rows:
        p = peer.get(r["frame"], {})
        vs = "  ".join(f"{k.replace('OM peakfinder8', 'pf8').replace('pyFAI integrate1d', 'pyFAI')} {v[0]:.1f} ms"
                       f" → {r['full'] / v[0]:.2f}×" for k, v in p.items() if "decode" not in k)
        print(f"{r['name']:15} {r['decode']:8.1f} {r['analysis']:9.1f} {r['full']:8.1f} {r['ratio']:9.2f}"
              f" {r['separate']:9.2f} {r['n_spots']:6d}   {vs}")
    if synth is not None:
        for size, m in ((s, m) for s in args.sizes for m in args.methods):
            rec, n, false = quality(synth, size, method=m)
            print(f"detection synth {size} {m}: recall(peak SNR>=10) {rec:.3f} of {n} spots; false spots on spot-free "
                  f"frames {false}")
    if real is not None and not args.no_peers:
        om = om_real_counts(real)
        n = ", ".join(f"{r['method']} {r['n_spots']}" for r in rows if r["frame"] == "real 4M")
        print(f"real 4M spots: mxcat {n}" + (f", OM peakfinder8 {om.get('normal')} (fast {om.get('fast')}) at "
                                              "min_snr 6, min_pixel_count 2, local_bg_radius 3" if om else
                                              ", OM peakfinder8 not available"))


if __name__ == "__main__":
    main()
