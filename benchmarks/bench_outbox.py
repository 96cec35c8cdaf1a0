"""Outbox and catalogue benchmark: records per second and end-to-end latency, one core.

Run: ``taskset -c 0 python benchmarks/bench_outbox.py [--records N] [--rate R] [--seconds S] [--mongodb]``

1. Throughput: N records (25 keys per dataset subject, validated against mmCAT) go through
   ``Catalogue.ingest`` into the outbox (durable, synchronous=FULL), then ``deliver`` moves them to
   the embedded catalogue (and to MongoDB with ``--mongodb``). Prints records/s for each stage.
2. Latency: a producer ingests R records/s in batches of 100 for S seconds while the background
   deliverer runs; latency is from the start of ``ingest`` to the sink's acknowledgement. Prints
   p50/p99/max. Targets: >= 50 000 records/s into the embedded catalogue; p99 < 1 s at 10 000/s.

MongoDB: ``$MXCAT_BENCH_MONGODB_URI`` for a real server, else nx-27017 (a wire-protocol server in
Python over SQLite) is started locally; its figures measure nx-27017 more than mxcat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mxcat.client import Catalogue  # noqa: E402
from mxcat.config import Config, SinkConfig  # noqa: E402
from mxcat.records import Batch, Provenance, Subject  # noqa: E402
from mxcat.sinks.embedded import EmbeddedSink  # noqa: E402

KEYS = [
    ("mmcat_collection.exposure_time", 0.01), ("mmcat_collection.detector_distance", 212.4), ("mmcat_collection.oscillation_width", 0.1),
    ("mmcat_collection.number_of_images", 3600), ("mmcat_collection.transmission", 20.0), ("mmcat_collection.flux", 3.2e12),
    ("mmcat_collection.beam_size_x", 50.0), ("mmcat_collection.beam_size_y", 20.0), ("mmcat_collection.oscillation_start", 0.0),
    ("mmcat_collection.beam_centre_x", 155.2), ("mmcat_collection.beam_centre_y", 161.9), ("mmcat_collection.photon_energy", 12.7),
    ("diffrn_radiation_wavelength.wavelength", 0.9762), ("mmcat_collection.resolution_edge", 1.4), ("mmcat_collection.file_template", "x_####.cbf"),
    ("mmcat_collection.directory", "/data/visitor/mx2532/id30a1"), ("mmcat_collection.experiment_type", "OSC"), ("mmcat_collection.run_number", 1),
    ("mmcat_collection.first_image_number", 1), ("mmcat_collection.start_time", "2026-11-21T03:14:15+01:00"), ("mmcat_collection.kappa_start", 0.0),
    ("mmcat_collection.phi_start", 0.0), ("mmcat_collection.omega_start", 0.0), ("mmcat_collection.slit_gap_vertical", 0.1),
    ("mmcat_collection.slit_gap_horizontal", 0.2),
]


def batch(i: int) -> Batch:
    s = Subject(facility="BENCH", beamline="BL1", proposal="p1", session=f"s{i // 1000}", sample=f"x{i // 10}", dataset=f"d{i}")
    b = Batch(s, Provenance(run="bench", program="bench"))
    for k, v in KEYS:
        b.add(k, v)
    return b


class TimedSink:
    """Wraps a sink and notes when each envelope id was acknowledged."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.name = inner.name
        self.acked: dict[str, float] = {}

    def put(self, envs):  # noqa: ANN001
        r = self.inner.put(envs)
        t = time.perf_counter()
        for i in r.stored:
            self.acked[i] = t
        return r

    def health(self):  # noqa: ANN201
        return self.inner.health()

    def close(self) -> None:
        self.inner.close()


def config(tmp: Path, mongo_uri: str | None, batch_size: int = 5000) -> Config:
    sinks = {"embedded": SinkConfig(type="embedded", options={"path": str(tmp / "catalogue.sqlite")})}
    if mongo_uri:
        os.environ["MXCAT_BENCH_URI"] = mongo_uri
        sinks["mongo"] = SinkConfig(type="mongodb", options={"uri_env": "MXCAT_BENCH_URI", "database": "mxcat_bench"})
    return Config(version=1, outbox={"path": tmp / "outbox.sqlite"}, delivery={"batch_size": batch_size}, sinks=sinks)


def throughput(n_records: int, mongo_uri: str | None, batch_size: int) -> None:
    n_batches = max(1, n_records // len(KEYS))
    print(f"delivery batch size {batch_size}")
    with tempfile.TemporaryDirectory() as d, Catalogue(config(Path(d), mongo_uri, batch_size)) as cat:
        batches = [batch(i) for i in range(n_batches)]
        t0 = time.perf_counter()
        total = 0
        for b in batches:
            total += cat.ingest(b, deliver_timeout=None).records
        t_ingest = time.perf_counter() - t0
        print(f"ingest (validate + outbox, synchronous=FULL): {total} records in {t_ingest:.2f} s = {total / t_ingest:,.0f} records/s")
        for name in cat.sink_names:
            from mxcat.deliver import Deliverer

            t1 = time.perf_counter()
            stats = Deliverer(cat.outbox, {name: cat.sink(name)}, batch_size=cat.config.delivery.batch_size).drain()
            dt = time.perf_counter() - t1
            print(f"outbox -> {name}: {stats.delivered} records in {dt:.2f} s = {stats.delivered / dt:,.0f} records/s"
                  + ("  [target >= 50,000: " + ("met]" if stats.delivered / dt >= 50_000 else "NOT met]") if name == "embedded" else ""))
            if name == "embedded":
                e2e = total / (t_ingest + dt)
                print(f"end to end into the embedded catalogue: {e2e:,.0f} records/s")


def latency(rate: float, seconds: float) -> None:
    per_batch = len(KEYS) * 4  # 100 records
    interval = per_batch / rate
    with tempfile.TemporaryDirectory() as d:
        cfg = config(Path(d), None)
        cfg = cfg.model_copy(update={"delivery": cfg.delivery.model_copy(update={"batch_size": 1000})})
        timed = TimedSink(EmbeddedSink("embedded", path=str(Path(d) / "catalogue.sqlite")))
        with Catalogue(cfg, sinks={"embedded": timed}) as cat:
            cat.start_delivery(idle=0.005)
            sent: dict[str, float] = {}
            t_start = time.perf_counter()
            i = 0
            next_t = t_start
            while time.perf_counter() - t_start < seconds:
                t = time.perf_counter()
                b = Batch(Subject(facility="L", beamline="BL1", proposal="p", session="s", sample=f"x{i}", dataset="d"), Provenance(run="lat"))
                for j in range(4):
                    for k, v in KEYS:
                        b.add(k, v, subject=b.subject.child(dataset=f"d{j}"))
                cat.ingest(b, deliver_timeout=None)
                for rec in cat.prepare(b).records:  # the ids, for matching acknowledgements (not timed)
                    sent[rec.id] = t
                i += 1
                next_t += interval
                pause = next_t - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            achieved = len(sent) / (time.perf_counter() - t_start)
            deadline = time.perf_counter() + 30
            while len(timed.acked) < len(sent) and time.perf_counter() < deadline:
                time.sleep(0.01)
            cat.stop_delivery()
            lat = sorted(timed.acked[k] - sent[k] for k in sent if k in timed.acked)
            p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
            print(f"latency at {achieved:,.0f} records/s offered for {seconds:.0f} s ({len(lat)} of {len(sent)} acknowledged): "
                  f"p50 {p(0.5) * 1000:.0f} ms, p99 {p(0.99) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms, mean {statistics.mean(lat) * 1000:.0f} ms"
                  f"  [target p99 < 1 s: {'met' if p(0.99) < 1.0 else 'NOT met'}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=5000, help="delivery batch size for the throughput run")
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--mongodb", action="store_true", help="also measure the MongoDB sink")
    args = ap.parse_args()
    print("# mxcat outbox benchmark (one core)")
    server = None
    uri = None
    if args.mongodb:
        uri = os.environ.get("MXCAT_BENCH_MONGODB_URI")
        if not uri:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.mongo_server import NxServer

            server = NxServer(Path(tempfile.mkdtemp()) / "nx.db")
            server.start()
            uri = server.uri
            print("MongoDB: nx-27017 (Python wire-protocol server over SQLite) on this machine")
    try:
        throughput(args.records, uri, args.batch_size)
        latency(args.rate, args.seconds)
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
