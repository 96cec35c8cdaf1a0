"""Adapter benchmark: files parsed per second for each adapter on the real corpus, one core.

Run: ``python benchmarks/bench_adapters.py [--corpus DIR] [--seconds S]``. Each corpus file claimed
by an adapter is parsed repeatedly for about S seconds; the report gives files/s and MB/s per
adapter (and per file with ``--per-file``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from mxcat.adapters import claim, registry

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "corpus")
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--per-file", action="store_true")
    args = ap.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"corpus not found: {args.corpus}")
    regs = registry()
    rates: dict[str, list[float]] = defaultdict(list)
    sizes: dict[str, int] = defaultdict(int)
    print("# mxcat adapter benchmark (files/s on the corpus, one core)")
    for path in sorted(p for p in args.corpus.rglob("*") if p.is_file()):
        adapter = claim(path, regs)
        if adapter is None:
            continue
        adapter.parse(path)  # warm up: imports (h5py, the ontology) are not parsing time
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds or n == 0:
            adapter.parse(path)
            n += 1
        dt = (time.perf_counter() - t0) / n
        rates[adapter.name].append(1.0 / dt)
        sizes[adapter.name] += path.stat().st_size
        if args.per_file:
            print(f"  {adapter.name:<18} {1 / dt:10.1f} files/s  {path.stat().st_size / dt / 1e6:8.1f} MB/s  {path.relative_to(args.corpus)}")
    print(f"{'adapter':<18} {'files':>5} {'files/s (median)':>17} {'slowest file/s':>15}")
    for name in sorted(rates):
        r = rates[name]
        print(f"{name:<18} {len(r):>5} {statistics.median(r):>17.1f} {min(r):>15.1f}")


if __name__ == "__main__":
    main()
