"""The three catalogue sinks side by side: records/s and requests (or messages) per dataset.

Run: ``python benchmarks/bench_sinks.py [--datasets 50] [--keys 60]``

Each sink gets the same load through the outbox and the deliverer: first delivery (datasets
created), then new values for the same keys (updates). ICAT and SciCat run against the reference
servers in tests/ (Python, in this process's machine: the figures bound mxcat's side, not a real
catalogue's); ICAT+ against RabbitMQ's STOMP plugin on 127.0.0.1:61613 (skipped when absent).
ESRF's update message carries one parameter, so ICAT+ updates cost one message per changed value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=50)
    ap.add_argument("--keys", type=int, default=60)
    a = ap.parse_args()
    import bench_icat
    import bench_icatplus
    import bench_scicat

    rows = []
    r = bench_icat.run(a.datasets, a.keys)
    rows.append(("icat (REST)", r["create_records_per_s"], r["create_requests_per_dataset"], r["update_records_per_s"],
                 r["update_requests_per_dataset"]))
    for api in ("v3", "v4"):
        r = bench_scicat.run(a.datasets, a.keys, api=api)
        rows.append((f"scicat {api} (REST)", r["create"]["records_per_s"], r["create"]["requests_per_dataset"],
                     r["update"]["records_per_s"], r["update"]["requests_per_dataset"]))
    from tests.stomp_broker import broker_problem

    problem = broker_problem()
    if problem:
        print(f"icatplus skipped: {problem}")
    else:
        r = bench_icatplus.run(a.datasets, a.keys)
        rows.append(("icatplus (STOMP)", r["first_records_per_s"], r["first_messages_per_dataset"],
                     r["update_records_per_s"], r["update_messages_per_dataset"]))
    print(f"{a.datasets} datasets x {a.keys} records, delivered twice (create, then update)")
    print(f"{'sink':20} {'create rec/s':>13} {'req/dataset':>12} {'update rec/s':>13} {'req/dataset':>12}")
    for name, c, cr, u, ur in rows:
        print(f"{name:20} {c:13,.0f} {cr:12.2f} {u:13,.0f} {ur:12.2f}")


if __name__ == "__main__":
    main()
