"""Ontology benchmark: dictionary load time and validation throughput of flattened values, one core.

Run: ``python benchmarks/bench_ontology.py [--values N]``. Prints load time (median of repeated cold
parses of all dictionaries) and values validated per second on a realistic mix of flattened keys:
numbers in the canonical unit, numbers needing a unit conversion, integers, enumerations, text and
date-times, with 1 % invalid values that are rejected.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--values", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from mxcat.ontology.core import Ontology
    from mxcat.ontology.loader import read_set

    loads = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        onto = Ontology(read_set(None))
        loads.append(time.perf_counter() - t)

    rng = random.Random(7)
    mix = [
        ("reflns.d_resolution_high", lambda: round(rng.uniform(0.8, 3.5), 2), None),
        ("reflns_shell.outer.pdbx_CC_half", lambda: round(rng.uniform(0.1, 0.9), 3), None),
        ("reflns_shell.inner.percent_possible_obs", lambda: round(rng.uniform(90, 100), 1), None),
        ("reflns.pdbx_Rmerge_I_obs", lambda: round(rng.uniform(2, 15), 1), "percent"),
        ("mmcat_collection.beam_size_x", lambda: rng.choice([0.01, 0.02, 0.05]), "millimetres"),
        ("mmcat_collection.detector_distance", lambda: round(rng.uniform(100, 400), 1), None),
        ("reflns.number_obs", lambda: rng.randint(1000, 200000), None),
        ("mmcat_processing.status", lambda: rng.choice(["success", "failed"]), None),
        ("symmetry.space_group_name_H-M", lambda: rng.choice(["P 41 21 2", "C 2 2 21", "P 1"]), None),
        ("mmcat_collection.start_time", lambda: "2026-11-21T03:14:15+01:00", None),
        ("reflns.pdbx_CC_half", lambda: "0.998(2)", None),
    ]
    values = []
    for i in range(args.values):
        key, gen, unit = mix[i % len(mix)]
        v = gen()
        if i % 100 == 99:
            v = -1.0 if key != "mmcat_processing.status" else "great"
        values.append((key, v, unit))

    validator = onto.validator
    t = time.perf_counter()
    result = validator.validate_many(values)
    dt = time.perf_counter() - t
    rate = len(values) / dt

    print(f"# mxcat ontology benchmark ({platform.python_implementation()} {platform.python_version()}, one core)")
    print(f"dictionaries: {len(onto.components)} files, {len(onto.items)} items, {len(list(onto.keys()))} flat keys, "
          f"{sum(1 for _ in onto.mappings())} mappings")
    print(f"load time: median {statistics.median(loads) * 1000:.1f} ms, min {min(loads) * 1000:.1f} ms over {len(loads)} loads")
    print(f"validation: {len(values)} values in {dt:.3f} s = {rate:,.0f} values/s "
          f"({len(result.accepted)} accepted, {len(result.rejected)} rejected); target >= 200,000 values/s: "
          f"{'met' if rate >= 200_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
