"""The MongoDB sink against a real wire-protocol server (nx-27017 started here, or $MXCAT_TEST_MONGODB_URI).

Covers upserts keyed by record id, the nested per-subject document whose dotted paths are the
canonical keys, the filter language, duplicate deliveries, the 16 MB limit (tables split into
chunks, oversized records dead-lettered), and a server stopped and restarted mid-delivery: the
records wait in the outbox and arrive once.
"""

from __future__ import annotations

import uuid

import pytest

pymongo = pytest.importorskip("pymongo")

from mxcat.client import Catalogue  # noqa: E402
from mxcat.config import Config, SinkConfig  # noqa: E402
from mxcat.deliver import Backoff, Deliverer  # noqa: E402
from mxcat.outbox import Outbox  # noqa: E402
from mxcat.query import parse  # noqa: E402
from mxcat.records import Batch, Provenance, Record, Subject, Table  # noqa: E402
from mxcat.sinks.mongodb import MongoSink  # noqa: E402
from tests.helpers.delivery import drain_until_delivered  # noqa: E402
from tests.mongo_server import NxServer, external_uri  # noqa: E402


@pytest.fixture()
def server(tmp_path):
    if external_uri():
        yield None
        return
    srv = NxServer(tmp_path / "nx.db")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture()
def uri(server):
    return external_uri() or server.uri


@pytest.fixture()
def sink(uri):
    s = MongoSink("mongo", uri=uri, database=f"mxcat_test_{uuid.uuid4().hex[:8]}", timeout_ms=1500)
    yield s
    try:
        s.client.drop_database(s.records.database.name)
    except pymongo.errors.PyMongoError:
        pass
    s.close()


def recs(subject: Subject, n: int = 3, run: str = "r1") -> list[dict]:
    out = [Record(subject, "reflns.d_resolution_high", 1.5 + i, "angstroms", Provenance(run=f"{run}-{i}")).to_envelope() for i in range(n)]
    return out


def test_upserts_and_nested_subject_document(sink, dataset):
    proc = dataset.child(processing="p1")
    envs = [Record(proc, "reflns.d_resolution_high", 1.6, "angstroms", Provenance(run="r1")).to_envelope(),
            Record(proc, "reflns_shell.outer.pdbx_CC_half", 0.4, "none", Provenance(run="r1")).to_envelope()]
    r = sink.put(envs)
    assert sorted(r.stored) == sorted(e["id"] for e in envs)
    sink.put(envs)  # delivered twice: stored once
    assert sink.records.count_documents({}) == 2
    doc = sink.subjects.find_one({"_id": proc.id})
    assert doc["reflns"]["d_resolution_high"]["value"] == 1.6
    assert doc["reflns_shell"]["outer"]["pdbx_CC_half"]["value"] == 0.4
    assert doc["_subject"]["beamline"] == "ID30A-1" and doc["_subject"]["kind"] == "processing"
    # the dotted canonical key is the query path
    assert sink.subjects.find_one({"reflns_shell.outer.pdbx_CC_half.value": {"$gt": 0.3}})["_id"] == proc.id


def test_duplicate_key_races_are_idempotent(sink, dataset):
    env = Record(dataset, "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run="r")).to_envelope()
    sink.records.insert_one({"_id": env["id"], "key": "x"})
    assert sink.put([env]).stored == [env["id"]]
    assert sink.records.find_one({"_id": env["id"]})["key"] == "mmcat_collection.exposure_time"


def test_big_tables_are_split_and_oversized_records_refused(sink, dataset):
    rows = [[i, i * 3, 1.0 / (i + 1)] for i in range(60_000)]
    t = Table(dataset, "mmcat_live_image", ("image_number", "n_spots_total", "estimated_d_min"), tuple(map(tuple, rows)), Provenance(run="big"))
    sink.chunk_bytes = 400_000
    r = sink.put([t.to_envelope()])
    assert r.stored == [t.id]
    doc = sink.tables.find_one({"_id": t.id})
    assert doc["chunks"] > 1 and doc["n_rows"] == 60_000
    assert sink.table_rows(t.id) == rows
    huge = Record(dataset, "mmcat_processing.message", "x" * (16 * 1024 * 1024), None, Provenance(run="huge")).to_envelope()
    r = sink.put([huge])
    assert huge["id"] in r.rejected and "16 MB" in r.rejected[huge["id"]]


def test_queries_match_the_embedded_catalogue(tmp_path, uri, onto):
    db = f"mxcat_q_{uuid.uuid4().hex[:8]}"
    cfg = Config(version=1, outbox={"path": tmp_path / "o.sqlite"},
                 sinks={"embedded": SinkConfig(type="embedded", options={"path": str(tmp_path / "c.sqlite")}),
                        "mongo": SinkConfig(type="mongodb", options={"uri_env": "MXCAT_TEST_URI", "database": db})})
    import os

    os.environ["MXCAT_TEST_URI"] = uri
    try:
        with Catalogue(cfg, onto) as cat:
            for i, (res, cc, sg) in enumerate([(1.5, 0.5, "P 41 21 2"), (2.5, 0.2, "P 1"), (1.9, 0.95, "C 2 2 21")]):
                s = Subject(facility="F", beamline="BL1" if i < 2 else "BL2", proposal="p", session="s", sample=f"x{i}", dataset="d", processing="run1")
                r = cat.ingest(Batch(s, Provenance(run="a")).add("reflns.d_resolution_high", res).add("reflns_shell.outer.pdbx_CC_half", cc)
                               .add("symmetry.space_group_name_H-M", sg))
                assert r.delivered.delivered == 6  # three records to each of two sinks
            mongo, emb = cat.sink("mongo"), cat.sink("embedded")
            for q in ["reflns.d_resolution_high < 2.0", "reflns.d_resolution_high < 2.0 and reflns_shell.outer.pdbx_CC_half > 0.9",
                      "not reflns.d_resolution_high < 2.0", "symmetry.space_group_name_H-M in ('P 1', 'C 2 2 21')",
                      "symmetry.space_group_name_H-M ~ '41'", "exists reflns.d_resolution_high", "reflns.d_resolution_high >= 0.19 nm",
                      "reflns.d_resolution_high != 1.5 or reflns_shell.outer.pdbx_CC_half = 0.5"]:
                node = parse(q, onto)
                assert [h["path"] for h in mongo.query(node)] == [h["path"] for h in emb.query(node)], q
            # show works the same through either catalogue
            ref = "facility=F/beamline=BL1/proposal=p/session=s/sample=x0/dataset=d/processing=run1"
            views = []
            for qs in ("embedded", "mongo"):
                cat.config.query_sink = qs
                v = cat.show(ref)
                views.append((v.subject_id, v.kind, {k: [(r["key"], r["value"], r["unit"], r["run"]) for r in rs] for k, rs in v.records.items()}))
                assert [c[2] for c in cat.show(ref.rsplit("/", 1)[0]).children] == [ref]
            assert views[0] == views[1]
            cat.config.query_sink = "embedded"
            node = parse("reflns.d_resolution_high < 3", onto)
            assert [h["path"] for h in mongo.query(node, {"beamline": "BL2"})] == [h["path"] for h in emb.query(node, {"beamline": "BL2"})]
            assert len(emb.query(node, {"beamline": "BL2"})) == 1
            mongo.client.drop_database(db)
    finally:
        os.environ.pop("MXCAT_TEST_URI", None)


@pytest.mark.skipif(bool(external_uri()), reason="restarts need the server started by the tests")
def test_server_restart_mid_delivery_loses_nothing(tmp_path, server, dataset):
    box = Outbox(tmp_path / "outbox.sqlite")
    db = f"mxcat_r_{uuid.uuid4().hex[:8]}"
    sink = MongoSink("mongo", uri=server.uri, database=db, timeout_ms=700)
    d = Deliverer(box, {"mongo": sink}, batch_size=10, backoff=Backoff(initial=0.05, maximum=0.2, jitter=0.0))
    first = [Record(dataset.child(sample=f"s{i}"), "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run="a")).to_envelope() for i in range(25)]
    box.put(first, ["mongo"])
    assert d.drain().delivered == 25

    server.stop()  # the catalogue goes away mid-run
    second = [Record(dataset.child(sample=f"t{i}"), "mmcat_collection.exposure_time", 0.02, "seconds", Provenance(run="b")).to_envelope() for i in range(25)]
    box.put(second, ["mongo"])
    s = d.drain()
    assert s.delivered == 0 and s.retried > 0
    assert {r.state for r in box.status()} == {"DONE", "PENDING"}

    server.start()  # back, with its data
    delivered = drain_until_delivered(d, box, "mongo", timeout=30, pause=0.1)
    assert box.pending("mongo") == 0 and delivered == 25
    check = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=3000)[db]
    assert check.records.count_documents({}) == 50
    assert len({d["_id"] for d in check.records.find({}, {"_id": 1})}) == 50
    sink.close()
    box.close()


def test_unreachable_server_is_unavailable_not_rejected(dataset):
    from mxcat.errors import SinkUnavailable
    from tests.mongo_server import free_port

    s = MongoSink("mongo", uri=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", timeout_ms=300)
    with pytest.raises(SinkUnavailable):
        s.put(recs(dataset, 1))
    assert not s.health().ok
