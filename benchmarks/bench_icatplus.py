"""ICAT+ sink benchmark: records/s from the outbox to a STOMP broker, and STOMP messages per dataset.

Run: ``python benchmarks/bench_icatplus.py [--datasets N] [--keys K]`` (from the repository root).

Each dataset is a raw collection plus one processing result, with about K records between them
(ESRF-named keys of mmCAT, validated). Phase 1 delivers them for the first time through the durable
outbox and the deliverer: one XML dataset message per dataset subject. Phase 2 delivers a second
run of the same values (new records of datasets already sent): one JSON update message per ESRF
name. Both phases print records/s and messages per dataset; every message is confirmed by the
broker (receipt) before the outbox marks its records done. Deliveries go in batches of 2000
records: a dataset whose records straddle two batches is created by the first and updated by the
second, hence slightly more than 2 messages per dataset in phase 1.

Broker: ``$MXCAT_BENCH_STOMP`` (``host:port``, default 127.0.0.1:61613; RabbitMQ's STOMP plugin
here, the facility's ActiveMQ in production) with ``$MXCAT_BENCH_STOMP_LOGIN`` /
``$MXCAT_BENCH_STOMP_PASSCODE`` (default guest/guest). The two queues it creates are deleted at the
end when ``rabbitmqctl`` is available.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mxcat.deliver import Deliverer  # noqa: E402
from mxcat.ingest import prepare  # noqa: E402
from mxcat.ontology import load  # noqa: E402
from mxcat.outbox import Outbox  # noqa: E402
from mxcat.records import Batch, Provenance, Subject  # noqa: E402
from mxcat.sinks.icatplus import IcatPlusSink  # noqa: E402


def _value(item: Any) -> Any:
    """A value inside the item's definition: an enumerated value, or the middle of its usual range."""
    if item.enumeration:
        return item.enumeration[0]
    if item.kind == "datetime":
        return "2026-11-21T09:00:00+00:00"
    if item.kind == "string":
        return "bench"
    rng = item.advisory_range or item.hard_range
    lo = rng.minimum if rng is not None and rng.minimum is not None and math.isfinite(rng.minimum) else 0.0
    hi = rng.maximum if rng is not None and rng.maximum is not None and math.isfinite(rng.maximum) else lo + 2.0
    mid = (lo + hi) / 2
    return int(mid) if item.kind == "int" else round(mid, 4)


def esrf_keys(onto: Any, entity: str) -> list[str]:
    keys = []
    for m in onto.mappings("esrf_icat"):
        item = onto.item(m.key)
        if item.entity == entity and m.relation in ("exact", "close") and m.key not in keys and m.key != "mmcat_collection.directory":
            keys.append(m.key)
    return keys


def envelopes(onto: Any, n_datasets: int, keys: int, run: str) -> list[dict[str, Any]]:
    raw_keys = esrf_keys(onto, "dataset")[: keys // 2]
    proc_keys = esrf_keys(onto, "processing")[: keys - len(raw_keys)]
    out: list[dict[str, Any]] = []
    for i in range(n_datasets):
        ds = Subject(facility="ESRF", beamline="ID30A-1", proposal="mx2532", session="20261121", sample=f"s{i // 10}", dataset=f"d{i:04d}")
        for subject, names in ((ds, raw_keys), (ds.child(processing="autoPROC"), proc_keys)):
            b = Batch(subject, Provenance(run=run, program="bench"))
            for k in names:
                b.add(k, _value(onto.item(k)))
            p = prepare(b, onto)
            out += [r.to_envelope() for r in p.records]
    return out


def _deliver(box: Outbox, sink: IcatPlusSink, envs: list[dict[str, Any]]) -> tuple[float, int, int]:
    sent = [0]
    send_all = sink._link.send_all

    def counting(messages: Any) -> set[int]:
        sent[0] += len(messages)
        return send_all(messages)

    sink._link.send_all = counting  # type: ignore[method-assign]
    box.put(envs, ["icatplus"])
    d = Deliverer(box, {"icatplus": sink}, batch_size=2000)
    t0 = time.perf_counter()
    delivered = d.drain().delivered
    dt = time.perf_counter() - t0
    sink._link.send_all = send_all  # type: ignore[method-assign]
    return dt, delivered, sent[0]


def run(n_datasets: int = 50, keys: int = 60) -> dict[str, Any]:
    """Deliver *n_datasets* datasets of about *keys* records each, twice; figures of both phases."""
    broker = os.environ.get("MXCAT_BENCH_STOMP", "127.0.0.1:61613")
    tag = f"mxcat-bench-{uuid.uuid4().hex[:8]}"
    onto = load()
    with tempfile.TemporaryDirectory() as tmp:
        sink = IcatPlusSink("icatplus", brokers=[broker], login=os.environ.get("MXCAT_BENCH_STOMP_LOGIN", "guest"),
                            passcode=os.environ.get("MXCAT_BENCH_STOMP_PASSCODE", "guest"), state_path=str(Path(tmp) / "state.sqlite"),
                            dataset_queue=f"/queue/{tag}-ingest", update_queue=f"/queue/{tag}-update")
        box = Outbox(Path(tmp) / "outbox.sqlite")
        try:
            health = sink.health()  # connect before timing
            if not health.ok:
                raise SystemExit(f"no STOMP broker: {health.detail}")
            first = envelopes(onto, n_datasets, keys, "first")
            dt1, n1, m1 = _deliver(box, sink, first)
            second = envelopes(onto, n_datasets, keys, "second")
            dt2, n2, m2 = _deliver(box, sink, second)
        finally:
            sink.close()
            box.close()
            if shutil.which("rabbitmqctl"):
                quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
                procs = [subprocess.Popen(["rabbitmqctl", "delete_queue", f"{tag}-{q}"], **quiet) for q in ("ingest", "update")]
                for p in procs:
                    p.wait(timeout=60)
    return {
        "datasets": n_datasets, "records_per_dataset": len(first) / n_datasets, "records": n1,
        "first_seconds": dt1, "first_records_per_s": n1 / dt1, "first_messages_per_dataset": m1 / n_datasets,
        "update_records": n2, "update_seconds": dt2, "update_records_per_s": n2 / dt2, "update_messages_per_dataset": m2 / n_datasets,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=int, default=50)
    ap.add_argument("--keys", type=int, default=60)
    a = ap.parse_args()
    r = run(a.datasets, a.keys)
    print(f"# mxcat ICAT+ sink benchmark: {r['datasets']} datasets x {r['records_per_dataset']:.0f} records "
          f"(raw + processed), broker {os.environ.get('MXCAT_BENCH_STOMP', '127.0.0.1:61613')}")
    print(f"first delivery (XML dataset messages): {r['records']} records in {r['first_seconds']:.2f} s = "
          f"{r['first_records_per_s']:,.0f} records/s, {r['first_messages_per_dataset']:.1f} messages per dataset")
    print(f"later records (JSON update messages):  {r['update_records']} records in {r['update_seconds']:.2f} s = "
          f"{r['update_records_per_s']:,.0f} records/s, {r['update_messages_per_dataset']:.1f} messages per dataset")


if __name__ == "__main__":
    main()
