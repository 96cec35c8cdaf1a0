"""ICAT sink benchmark: records/s through the outbox into the reference ICAT, and HTTP requests per dataset.

Run: ``python benchmarks/bench_icat.py [--datasets 50] [--keys 60] [--batch-size 500]``

Starts the reference ICAT REST server of the tests (``tests/icat_server.py``, a Python fixture: its
speed, not ICAT's, bounds the figures), creates the ParameterTypes (not timed), then puts
``datasets`` × ``keys`` records in an Outbox and delivers them with a Deliverer to the ``icat`` sink:
two thirds of each dataset's keys on the raw dataset, one third on a processing of it (a processed
dataset). Prints records/s and HTTP requests per dataset for the first delivery (everything
created) and for a second run of new values for the same keys (everything updated). Batching makes
that a handful of requests per batch of datasets, not one per key. ``run()`` returns the figures
for a combined benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mxcat.deliver import Backoff, Deliverer  # noqa: E402
from mxcat.ontology import load  # noqa: E402
from mxcat.outbox import Outbox  # noqa: E402
from mxcat.records import Provenance, Record, Subject  # noqa: E402
from mxcat.sinks.icat import IcatSink, key_plans  # noqa: E402
from tests.icat_server import IcatServer  # noqa: E402


def _keys(onto: Any, entity: str, n: int) -> list[tuple[str, str, str | None]]:
    out = []
    for key, plan in sorted(key_plans(onto, "mmcat").items()):
        item, _ = onto.lookup(key)
        if item.entity == entity and not plan.definition["enforced"]:
            out.append((key, plan.definition["valueType"], item.units))
    if len(out) < n:
        raise SystemExit(f"only {len(out)} {entity}-level keys in the ontology; ask for fewer")
    return out[:n]


def _value(value_type: str, i: int, run: int) -> Any:
    if value_type == "NUMERIC":
        return 1.0 + i + run / 10
    if value_type == "DATE_AND_TIME":
        return f"2026-11-21T03:{i % 60:02d}:{run % 60:02d}+01:00"
    return f"value {i} of run {run}"


def envelopes(onto: Any, n_datasets: int, keys: int, run: int) -> list[dict[str, Any]]:
    raw_keys = _keys(onto, "dataset", keys - keys // 3)
    proc_keys = _keys(onto, "processing", keys // 3)
    prov = Provenance(run=f"bench-{run}", program="bench", version="1")
    out = []
    for d in range(n_datasets):
        ds = Subject(facility="BENCH", beamline="BL1", proposal="mx0001", session="20261121", sample=f"x{d // 5}", dataset=f"d{d}")
        proc = ds.child(processing="autoproc")
        for i, (key, vt, unit) in enumerate(raw_keys):
            out.append(Record(ds, key, _value(vt, i, run), unit if vt == "NUMERIC" else None, prov).to_envelope())
        for i, (key, vt, unit) in enumerate(proc_keys):
            out.append(Record(proc, key, _value(vt, i, run), unit if vt == "NUMERIC" else None, prov).to_envelope())
    return out


def _deliver(server: IcatServer, sink: IcatSink, box: Outbox, envs: list[dict[str, Any]], batch_size: int) -> tuple[float, int, int]:
    box.put(envs, [sink.name])
    d = Deliverer(box, {sink.name: sink}, batch_size=batch_size, backoff=Backoff(initial=0.01, maximum=0.1, jitter=0.0))
    before = server.request_count
    t0 = time.perf_counter()
    stats = d.drain()
    seconds = time.perf_counter() - t0
    return seconds, stats.delivered, server.request_count - before


def run(n_datasets: int = 50, keys: int = 60, batch_size: int = 500) -> dict[str, Any]:
    """Deliver n_datasets × keys records twice (create, then update); the figures as a dict."""
    onto = load()
    with tempfile.TemporaryDirectory() as tmp, IcatServer(facility="BENCH") as server:
        sink = IcatSink("icat", url=server.url, username="mxcat", password="secret", facility="BENCH", ontology=onto)
        sink.sync_parameter_types()
        box = Outbox(Path(tmp) / "outbox.sqlite", synchronous="NORMAL")
        first = envelopes(onto, n_datasets, keys, 1)
        s1, n1, r1 = _deliver(server, sink, box, first, batch_size)
        s2, n2, r2 = _deliver(server, sink, box, envelopes(onto, n_datasets, keys, 2), batch_size)
        params = server.count("DatasetParameter")
        box.close()
        sink.close()
    if params != len(first) or n1 != len(first) or n2 != len(first):
        raise RuntimeError(f"delivered {n1}/{n2} of {len(first)} records, ICAT holds {params} parameters")
    return {"datasets": n_datasets, "keys": keys, "records": len(first), "batch_size": batch_size,
            "create_seconds": round(s1, 3), "create_records_per_s": round(n1 / s1), "create_requests": r1,
            "create_requests_per_dataset": round(r1 / n_datasets, 2),
            "update_seconds": round(s2, 3), "update_records_per_s": round(n2 / s2), "update_requests": r2,
            "update_requests_per_dataset": round(r2 / n_datasets, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=50)
    ap.add_argument("--keys", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args()
    r = run(a.datasets, a.keys, a.batch_size)
    if a.json:
        print(json.dumps(r))
        return
    print(f"ICAT sink, reference server: {r['datasets']} datasets x {r['keys']} keys = {r['records']} records, batches of {r['batch_size']}")
    for phase in ("create", "update"):
        print(f"  {phase}: {r[f'{phase}_records_per_s']:>7} records/s ({r[f'{phase}_seconds']:.2f} s), "
              f"{r[f'{phase}_requests']} HTTP requests = {r[f'{phase}_requests_per_dataset']} per dataset")


if __name__ == "__main__":
    main()
