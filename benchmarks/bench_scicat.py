"""SciCat sink benchmark: records/s and HTTP requests per dataset, through the outbox and the deliverer.

Run: ``python benchmarks/bench_scicat.py [--datasets N] [--keys K] [--api v3|v4|both]``

N processing subjects (SciCat derived datasets) with K numeric mmCAT keys each go into an outbox,
then a ``Deliverer`` (batches of 500) moves them to the ``scicat`` sink talking to the reference
SciCat server of the tests (``tests/scicat_server.py``, a Python ``http.server`` on 127.0.0.1).
Two rounds: *create* (new datasets) and *update* (a second processing run's values for the same
datasets: v4 merge patches, v3 read-modify-write). Prints records/s and HTTP requests per dataset
for each; requests per dataset is the sink's own cost, records/s measures the Python server as
much as the sink. ``run()`` returns the figures for a combined benchmark.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mxcat.deliver import Backoff, Deliverer  # noqa: E402
from mxcat.ontology import load  # noqa: E402
from mxcat.ontology.export import exported_keys  # noqa: E402
from mxcat.outbox import Outbox  # noqa: E402
from mxcat.records import Provenance, Record, Subject  # noqa: E402
from mxcat.sinks.scicat import SciCatSink  # noqa: E402
from tests.scicat_server import SciCatServer  # noqa: E402


def _keys(n: int) -> list[tuple[str, str]]:
    onto = load()
    numeric = [(key, item.units or "none") for key, item, _ in exported_keys(onto) if item.is_numeric]
    return [(f"{k}" if i < len(numeric) else f"{k}_{i}", u) for i, (k, u) in ((i, numeric[i % len(numeric)]) for i in range(n))]


def _envelopes(n_datasets: int, keys: list[tuple[str, str]], run: str) -> list[dict[str, Any]]:
    out = []
    prov = Provenance(run=run, program="autoPROC", version="1.0.5", source="/data/visitor/mx2532/id30a1/proc/summary.xml")
    for i in range(n_datasets):
        s = Subject(facility="ESRF", beamline="ID30A-1", proposal="mx2532", session="20261121", sample=f"s{i % 7}",
                    dataset=f"d{i}", processing="autoproc")
        out += [Record(s, key, 1.0 + 0.01 * j + (0.5 if run == "update" else 0.0), unit, prov).to_envelope() for j, (key, unit) in enumerate(keys)]
    return out


def run(n_datasets: int = 50, keys: int = 60, api: str = "v4") -> dict[str, Any]:
    """Push *n_datasets* x *keys* records to a fresh reference server with API *api*; returns the figures."""
    names = _keys(keys)
    figures: dict[str, Any] = {"api": api, "datasets": n_datasets, "keys": keys}
    with tempfile.TemporaryDirectory() as tmp, SciCatServer() as srv:
        sink = SciCatSink("scicat", url=srv.url, api=api, username="ingestor", password="ingestor-pw", owner_group="mx",
                          contact_email="mx-support@example.org")
        box = Outbox(Path(tmp) / "outbox.sqlite", synchronous="NORMAL")
        d = Deliverer(box, {"scicat": sink}, batch_size=500, backoff=Backoff(initial=0.01, maximum=0.1, jitter=0.0))
        for phase in ("create", "update"):
            envs = _envelopes(n_datasets, names, phase)
            box.put(envs, ["scicat"])
            srv.reset_counts()
            t0 = time.perf_counter()
            stats = d.drain()
            dt = time.perf_counter() - t0
            if stats.delivered != len(envs):
                raise RuntimeError(f"{phase}: delivered {stats.delivered} of {len(envs)}: {stats.errors[:3]}")
            figures[phase] = {"records": len(envs), "seconds": round(dt, 3), "records_per_s": round(len(envs) / dt),
                              "requests": srv.total, "requests_per_dataset": round(srv.total / n_datasets, 2),
                              "by_route": dict(srv.counts)}
        box.close()
        sink.close()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=50)
    ap.add_argument("--keys", type=int, default=60)
    ap.add_argument("--api", choices=["v3", "v4", "both"], default="both")
    args = ap.parse_args()
    for api in (["v3", "v4"] if args.api == "both" else [args.api]):
        f = run(args.datasets, args.keys, api)
        for phase in ("create", "update"):
            p = f[phase]
            print(f"scicat {api} {phase:6s}: {p['records']:6d} records in {p['seconds']:7.3f} s = {p['records_per_s']:7d} records/s; "
                  f"{p['requests']} HTTP requests = {p['requests_per_dataset']} per dataset  {p['by_route']}")


if __name__ == "__main__":
    main()
