"""The ICAT sink against the reference ICAT REST server (tests/icat_server.py) over real HTTP on 127.0.0.1.

Covers sessions (login, refresh, re-login after expiry), sync-parameter-types (library and CLI),
raw and processed datasets with their inputs (ICAT's Job model, redelivered without orphans after a
failure or a lost answer at any write), one value per ParameterType, writes answered with the ids of
created entities only, image-range records kept out of ICAT, per-record refusals (4000 characters,
offsets), races answered OBJECT_ALREADY_EXISTS, paging past the search cap, the error table and what
no record can fix (permissions, a refused query, a missing facility: records wait, health() says it),
and an ICAT stopped mid-delivery: records wait in the outbox and arrive once.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import pytest

pytest.importorskip("requests")

from mxcat.deliver import Backoff, Deliverer  # noqa: E402
from mxcat.errors import ConfigError, SinkRejected, SinkUnavailable  # noqa: E402
from mxcat.outbox import Outbox  # noqa: E402
from mxcat.records import Provenance, Record, Subject, Table  # noqa: E402
from mxcat.sinks import create  # noqa: E402
from mxcat.sinks.icat import IcatSink, key_plans  # noqa: E402
from mxcat.sinks.icat_client import ICAT_ERRORS, IcatError, sink_error  # noqa: E402
from tests.helpers.delivery import drain_until_delivered  # noqa: E402
from tests.icat_server import IcatServer  # noqa: E402
from tests.mongo_server import free_port  # noqa: E402

FAC = "ESRF"


@pytest.fixture()
def server():
    srv = IcatServer(facility=FAC, users={("simple", "mxcat"): "secret", ("simple", "reader"): "pw"}, readonly={"reader"}).start()
    yield srv
    srv.stop()


def make_sink(srv: IcatServer, onto, **kw) -> IcatSink:
    kw.setdefault("username", "mxcat")
    kw.setdefault("password", "secret")
    return IcatSink("icat", url=srv.url, facility=FAC, timeout=5.0, ontology=onto, **kw)


@pytest.fixture()
def sink(server, onto):
    s = make_sink(server, onto)
    s.sync_parameter_types()
    yield s
    s.close()


@pytest.fixture(scope="module")
def numeric_keys(onto):
    """Dataset-level numeric keys with their canonical unit, as a collection adapter would emit them."""
    out = []
    for key, plan in sorted(key_plans(onto, "mmcat").items()):
        item, _ = onto.lookup(key)
        d = plan.definition
        if item.entity == "dataset" and d["valueType"] == "NUMERIC" and d["applicableToDataset"] and not d["enforced"]:
            out.append((key, item.units))
    assert len(out) >= 60
    return out


@pytest.fixture()
def dataset():
    return Subject(facility="ESRF", beamline="ID30A-1", proposal="mx2532", session="20261121", sample="lyso1", dataset="lyso1_1_1")


def records(subject: Subject, keys, run: str = "r1", base: float = 1.0) -> list[dict]:
    return [Record(subject, k, base + i / 100, u, Provenance(run=run)).to_envelope() for i, (k, u) in enumerate(keys)]


def values_by_type(srv: IcatServer, entity: str = "DatasetParameter", **where) -> dict[str, object]:
    names = {r["id"]: r["name"] for r in srv.rows("ParameterType")}
    return {names[p["type"]]: p["numericValue"] if p["numericValue"] is not None else p["stringValue"] or p["dateTimeValue"]
            for p in srv.rows(entity, **where)}


# -- configuration and sessions -------------------------------------------------------------------------

def test_create_from_configuration_with_password_env(server, monkeypatch):
    monkeypatch.setenv("MXCAT_TEST_ICAT_PASSWORD", "secret")
    opts = {"url": server.url, "username": "mxcat", "password_env": "MXCAT_TEST_ICAT_PASSWORD", "facility": FAC}
    s = create("x", "icat", opts)
    assert isinstance(s, IcatSink) and s.name == "x"
    assert s.health().ok and "ICAT 6.0.0" in s.health().detail
    s.client.ensure_session()
    assert server.logins == 1
    s.close()
    assert not server.sessions  # logged out
    with pytest.raises(ConfigError, match="password"):
        create("x", "icat", {**opts, "password": "secret"})  # a password in the file itself is refused
    monkeypatch.delenv("MXCAT_TEST_ICAT_PASSWORD")
    with pytest.raises(ConfigError, match="MXCAT_TEST_ICAT_PASSWORD"):
        create("x", "icat", opts)
    with pytest.raises(ConfigError, match="dataset_name"):
        IcatSink("x", url=server.url, username="u", password="p", facility=FAC, dataset_name="{sample}_{run}")


def test_session_refresh_and_login_again_after_expiry(onto, numeric_keys, dataset):
    srv = IcatServer(facility=FAC, lifetime=1.6).start()
    try:
        make_sink(srv, onto).sync_parameter_types()
        s = make_sink(srv, onto)
        s.plans()
        assert len(s.put(records(dataset, numeric_keys[:3], "a")).stored) == 3 and srv.logins == 2
        time.sleep(0.9)  # more than half the lifetime: the next call refreshes (PUT session/{id}) instead of logging in
        assert len(s.put(records(dataset, numeric_keys[:3], "b")).stored) == 3
        assert srv.requests["PUT /icat/session/{id}"] == 1 and srv.logins == 2
        srv.expire_sessions()  # ICAT forgets the session: SESSION, one new login, the request again
        assert len(s.put(records(dataset, numeric_keys[:3], "c")).stored) == 3 and srv.logins == 3
        time.sleep(1.7)  # expired while idle: the refresh is refused, so log in again
        assert len(s.put(records(dataset, numeric_keys[:3], "d")).stored) == 3 and srv.logins == 4
        assert srv.count("DatasetParameter") == 3
        bad = make_sink(srv, onto, password="not-the-password")
        with pytest.raises(SinkUnavailable) as ex:
            bad.put(records(dataset, numeric_keys[:1]))
        assert "refused the login" in str(ex.value) and "not-the-password" not in str(ex.value)
    finally:
        srv.stop()


# -- parameter types ------------------------------------------------------------------------------------

def test_sync_parameter_types_creates_missing_and_leaves_conflicts_alone(server, onto):
    plans = key_plans(onto, "mmcat")
    res = plans["reflns.d_resolution_high"].definition
    cc = plans["reflns_shell.outer.pdbx_CC_half"].definition
    server.create("ParameterType", facility=server.facility_id, name=cc["name"], units=cc["units"], valueType="NUMERIC",
                  applicableToDataset=True)
    server.create("ParameterType", facility=server.facility_id, name=res["name"], units="nm", valueType="NUMERIC")
    s = make_sink(server, onto)
    dry = s.sync_parameter_types(dry_run=True)
    assert len(dry.created) == len(plans) - 2 and server.count("ParameterType") == 2  # nothing written
    rep = s.sync_parameter_types()
    assert len(rep.created) == len(plans) - 2 and rep.existing == [cc["name"]]
    assert [(c.name, c.units, c.icat_units) for c in rep.conflicts] == [(res["name"], res["units"], "nm")] and not rep.ok
    assert [r["units"] for r in server.rows("ParameterType", name=res["name"])] == ["nm"]  # unchanged, not duplicated
    enum = next(p.definition for p in plans.values() if p.definition.get("permissibleStringValues"))
    pt = server.rows("ParameterType", name=enum["name"])[0]
    assert pt["enforced"] and {r["value"] for r in server.rows("PermissibleStringValue", type=pt["id"])} == \
        {v["value"] for v in enum["permissibleStringValues"]}
    again = s.sync_parameter_types()
    assert again.created == [] and len(again.existing) == len(plans) - 1 and len(again.conflicts) == 1


def test_cli_sync_parameter_types(server, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mxcat.cli import state
    from mxcat.cli.icat import app

    cfg = tmp_path / "mxcat.yaml"
    cfg.write_text(f"version: 1\nsinks:\n  embedded:\n    type: embedded\n    options:\n      path: {tmp_path}/cat.sqlite\n"
                   f"  archive:\n    type: icat\n    options:\n      url: {server.url}\n      username: mxcat\n"
                   f"      password_env: MXCAT_TEST_ICAT_PW\n      facility: {FAC}\n")
    monkeypatch.setattr(state, "config", None)
    monkeypatch.setenv("MXCAT_CONFIG", str(cfg))
    monkeypatch.setenv("MXCAT_TEST_ICAT_PW", "secret")
    runner = CliRunner()
    r = runner.invoke(app, ["sync-parameter-types", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "would create 293" in r.output and server.count("ParameterType") == 0
    server.create("ParameterType", facility=server.facility_id, name="mmcat_collection.exposure_time", units="ms", valueType="NUMERIC")
    r = runner.invoke(app, ["sync-parameter-types", "--sink", "archive"])
    assert r.exit_code == 1  # a conflict is worth a non-zero exit
    assert "created 292" in r.output and "conflicts 1" in r.output and server.count("ParameterType") == 293
    r = runner.invoke(app, ["sync-parameter-types", "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.output)
    assert doc["created"] == [] and len(doc["existing"]) == 292
    assert doc["conflicts"][0]["name"] == "mmcat_collection.exposure_time" and doc["conflicts"][0]["icat_units"] == "ms"
    r = runner.invoke(app, ["sync-parameter-types", "--sink", "embedded"])
    assert isinstance(r.exception, ConfigError) and "archive" in str(r.exception)


def test_missing_parameter_type_is_refused_with_a_hint_or_created_when_asked(server, onto, numeric_keys, dataset):
    s = make_sink(server, onto)
    envs = records(dataset, numeric_keys[:2])
    r = s.put(envs)
    assert set(r.rejected) == {e["id"] for e in envs} and "mxcat icat sync-parameter-types" in r.rejected[envs[0]["id"]]
    auto = make_sink(server, onto, create_parameter_types=True)
    r = auto.put(envs)
    assert sorted(r.stored) == sorted(e["id"] for e in envs) and server.count("ParameterType") == 2
    assert server.count("DatasetParameter") == 2


# -- datasets and values ------------------------------------------------------------------------------------

def test_levels_tables_and_value_types(sink, server, dataset, caplog):
    t = Table(dataset, "mmcat_live_image", ("image_number", "n_spots_total"), ((1, 5), (2, 7)), Provenance(run="a"))
    envs = [Record(dataset, "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run="a")).to_envelope(),
            Record(dataset, "mmcat_collection.start_time", "2026-11-21T10:00:00+01:00", None, Provenance(run="a")).to_envelope(),
            Record(dataset, "mmcat_collection.experiment_type", "OSC", None, Provenance(run="a")).to_envelope(),
            Record(dataset.at("sample"), "mmcat_sample.protein_acronym", "LYSO", None, Provenance(run="a")).to_envelope(),
            Record(dataset.at("beamline"), "diffrn_source.type", "ESRF BEAMLINE ID30A-1", None, Provenance(run="a")).to_envelope(),
            t.to_envelope(), t.to_envelope() | {"id": "other-table"}]
    no_session = Subject(facility="ESRF", beamline="ID30A-1", proposal="mx2532", sample="s", dataset="d")
    orphan = Record(no_session, "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run="a")).to_envelope()
    with caplog.at_level(logging.WARNING, logger="mxcat.sinks.icat"):
        r = sink.put(envs + [orphan])
    assert sorted(r.stored) == sorted(e["id"] for e in envs)
    assert list(r.rejected) == [orphan["id"]] and "visitId" in r.rejected[orphan["id"]]
    assert sum("no table model" in m for m in caplog.messages) == 1  # logged once per category
    assert sum("beamline-level" in m for m in caplog.messages) == 1
    inv = server.rows("Investigation")
    assert [(i["name"], i["visitId"]) for i in inv] == [("mx2532", "20261121")]
    ds = server.rows("Dataset")[0]
    assert ds["name"] == "lyso1_1_1" and server.rows("Sample", id=ds["sample"])[0]["name"] == "lyso1"
    assert server.rows("DatasetType", id=ds["type"])[0]["name"] == "raw"
    got = values_by_type(server, dataset=ds["id"])
    assert got["mmcat_collection.exposure_time"] == 0.01 and got["mmcat_collection.experiment_type"] == "OSC"
    assert got["mmcat_collection.start_time"] == datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    assert values_by_type(server, "SampleParameter") == {"mmcat_sample.protein_acronym": "LYSO"}


def provenance_of(srv: IcatServer, pid: int) -> list[tuple[set[int], set[int], tuple[str, str], str]]:
    """Each Job whose output collection holds dataset *pid*: (input datasets, output datasets, (program, version), arguments)."""
    def members(dc: int) -> set[int]:
        return {r["dataset"] for r in srv.rows("DataCollectionDataset", dataCollection=dc)}

    out = []
    for link in srv.rows("DataCollectionDataset", dataset=pid):
        for job in srv.rows("Job", outputDataCollection=link["dataCollection"]):
            app = srv.rows("Application", id=job["application"])[0]
            out.append((members(job["inputDataCollection"]), members(job["outputDataCollection"]), (app["name"], app["version"]),
                        job["arguments"]))
    return out


def test_raw_and_processed_datasets_with_inputs(sink, server, onto, dataset):
    d2 = dataset.child(dataset="lyso1_1_2")
    sink.put([Record(d, "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run="c")).to_envelope() for d in (dataset, d2)])
    proc = Subject(**{**dataset.to_dict(), "processing": "xia2-merge"}, inputs=(dataset.id, d2.id, "f" * 32))
    prov = Provenance(run="p1", program="xia2", version="3.1")
    envs = [Record(proc, "reflns.d_resolution_high", 1.5, "angstroms", prov).to_envelope(),
            Record(proc, "reflns_shell.outer.pdbx_CC_half", 0.45, "none", prov).to_envelope()]
    assert len(sink.put(envs).stored) == 2
    ds = {d["name"]: d for d in server.rows("Dataset")}
    p = ds["lyso1_1_1_xia2-merge"]
    assert server.rows("DatasetType", id=p["type"])[0]["name"] == "processed" and p["sample"] == ds["lyso1_1_1"]["sample"]
    assert "xia2 3.1" in p["description"] and "not found in ICAT: ffffffffffff" in p["description"]
    # ICAT's provenance model: inputs -> Job (Application xia2 3.1) -> output; the output is not among the inputs
    ((inputs, outputs, app, args),) = provenance_of(server, p["id"])
    assert inputs == {ds["lyso1_1_1"]["id"], ds["lyso1_1_2"]["id"]} and outputs == {p["id"]}
    assert app == ("xia2", "3.1") and "xia2-merge" in args and "ffffffffffff" in args
    assert values_by_type(server, dataset=p["id"]) == {"reflns.d_resolution_high": 1.5, "reflns_shell.outer.pdbx_CC_half": 0.45}
    # a sink that starts cold finds the processed dataset and its Job, and links nothing again
    cold = make_sink(server, onto)
    more = [Record(proc, "reflns.d_resolution_high", 1.4, "angstroms", Provenance(run="p2", program="xia2", version="3.1")).to_envelope()]
    assert cold.put(more).stored == [more[0]["id"]]
    assert server.count("Dataset") == 3 and server.count("DataCollection") == 2 and server.count("Job") == 1
    assert values_by_type(server, dataset=p["id"])["reflns.d_resolution_high"] == 1.4
    # a second processing of the same dataset by another program: its own Job and Application
    other = Record(dataset.child(processing="autoPROC"), "reflns.d_resolution_high", 1.6, "angstroms",
                   Provenance(run="p3", program="autoPROC")).to_envelope()
    assert sink.put([other]).stored == [other["id"]]
    q = server.rows("Dataset", name="lyso1_1_1_autoPROC")[0]
    assert [(i, o, a) for i, o, a, _ in provenance_of(server, q["id"])] == [({ds["lyso1_1_1"]["id"]}, {q["id"]},
                                                                            ("autoPROC", "unspecified"))]
    assert server.count("Application") == 2 and server.count("Job") == 2


@pytest.mark.parametrize("step", [0, 1, 2, 3])
@pytest.mark.parametrize("how", ["lost", "failed"])
def test_a_processed_dataset_write_failed_at_any_step_is_redelivered_without_orphans(sink, server, dataset, step, how):
    """The writes: processed dataset; Application + output collection; inputs collection + Job; parameters. One fails (or ICAT
    commits it and the answer is lost); redelivery finds what was done and finishes, leaving exactly one of everything."""
    sink.put([Record(dataset, "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run="c")).to_envelope()])
    env = Record(dataset.child(processing="autoproc"), "reflns.d_resolution_high", 1.5, "angstroms",
                 Provenance(run="p1", program="autoPROC", version="1.0")).to_envelope()
    writes: list[list[str]] = []

    def at_step(top: list[dict]) -> None:
        writes.append([next(iter(e)) for e in top])
        if len(writes) == step + 1:
            if how == "failed":
                raise RuntimeError("ICAT fell over")  # answered INTERNAL, nothing written
            server.lose_responses()  # written, and the answer never arrives

    server.before_write = at_step
    with pytest.raises(SinkUnavailable):
        sink.put([env])
    assert writes[step] == [["Dataset"], ["Application", "DataCollection"], ["DataCollection"], ["DatasetParameter"]][step]
    server.before_write = None
    assert sink.put([env]).stored == [env["id"]]
    p = server.rows("Dataset", name="lyso1_1_1_autoproc")[0]
    assert server.count("Dataset") == 2 and server.count("Application") == 1 and server.count("Job") == 1
    assert server.count("DataCollection") == 2  # inputs and output, nothing left over
    ((inputs, outputs, app, _),) = provenance_of(server, p["id"])
    assert inputs == {server.rows("Dataset", name="lyso1_1_1")[0]["id"]} and outputs == {p["id"]} and app == ("autoPROC", "1.0")
    assert values_by_type(server, dataset=p["id"]) == {"reflns.d_resolution_high": 1.5}


def test_one_value_per_type_updates_instead_of_duplicating(sink, server, onto, numeric_keys, dataset):
    keys = numeric_keys[:10]
    sink.put(records(dataset, keys, "r1", 1.0))
    assert server.count("DatasetParameter") == 10
    r = sink.put(records(dataset, keys, "r2", 2.0))  # another run, same keys: new values replace the old ones
    assert len(r.stored) == 10 and server.count("DatasetParameter") == 10
    assert values_by_type(server)[keys[3][0]] == pytest.approx(2.03)
    cold = make_sink(server, onto)  # no cached ids: finds the parameters in ICAT, still updates
    cold.put(records(dataset, keys, "r3", 3.0))
    assert server.count("DatasetParameter") == 10 and values_by_type(server)[keys[3][0]] == pytest.approx(3.03)
    twice = records(dataset, keys[:1], "r4", 4.0) + records(dataset, keys[:1], "r5", 5.0)
    r = sink.put(twice)  # two values of one key in one batch: the last one wins, both acknowledged
    assert len(r.stored) == 2 and values_by_type(server)[keys[0][0]] == 5.0 and server.count("DatasetParameter") == 10


def test_updates_are_answered_without_ids_as_icat_does(sink, server, onto, numeric_keys, dataset):
    """icat.server answers a write with the ids of the entities it created only: a batch of updates gets [] and must pass."""
    keys = numeric_keys[:3]
    assert len(sink.put(records(dataset, keys, "r1", 1.0)).stored) == 3
    ids = {p["type"]: p["id"] for p in server.rows("DatasetParameter")}
    r = sink.put(records(dataset, keys, "r2", 5.0))  # all three are updates
    assert len(r.stored) == 3 and not r.rejected
    assert sorted(values_by_type(server).values()) == pytest.approx([5.0, 5.01, 5.02])
    r = sink.put(records(dataset, numeric_keys[:5], "r3", 7.0))  # three updates and two creations in one write
    assert len(r.stored) == 5 and server.count("DatasetParameter") == 5
    assert {p["type"]: p["id"] for p in server.rows("DatasetParameter") if p["type"] in ids} == ids  # updated in place
    assert sorted(values_by_type(server).values()) == pytest.approx([7.0, 7.01, 7.02, 7.03, 7.04])
    # the client gives the created ids to the entities sent without one, in order, and updates keep theirs
    (ds,) = server.rows("Dataset")
    pt = {r["name"]: r["id"] for r in server.rows("ParameterType")}
    pid = next(iter(ids.values()))
    got = sink.client.write([{"Sample": {"investigation": {"id": ds["investigation"]}, "name": "new1"}},
                             {"DatasetParameter": {"id": pid, "numericValue": 9.0}},
                             {"Sample": {"investigation": {"id": ds["investigation"]}, "name": "new2"}}])
    assert got == [server.rows("Sample", name="new1")[0]["id"], pid, server.rows("Sample", name="new2")[0]["id"]]
    assert pt and sink.client.write([{"DatasetParameter": {"id": pid, "numericValue": 9.5}}]) == [pid]


def test_a_lost_answer_after_icat_committed_is_redelivered_without_duplicates(tmp_path, sink, server, numeric_keys, dataset):
    """ICAT commits a write and the answer is lost (the client sees a connection error): the outbox delivers the batch again,
    which finds what was written and updates it, for creations and updates alike."""
    box = Outbox(tmp_path / "outbox.sqlite")
    d = Deliverer(box, {"icat": sink}, batch_size=50, backoff=Backoff(initial=0.01, maximum=0.01, jitter=0.0))

    def lose_the_parameters_answer(top: list[dict]) -> None:
        if any("DatasetParameter" in e for e in top):
            server.before_write = None
            server.lose_responses()

    for run, base in (("r1", 1.0), ("r2", 2.0)):  # r1 creates the dataset and its parameters, r2 updates them
        box.put(records(dataset, numeric_keys[:6], run, base), ["icat"])
        server.before_write = lose_the_parameters_answer
        s = d.drain()
        assert s.delivered == 0 and s.retried == 6 and box.pending("icat") == 6
        assert server.count("DatasetParameter") == 6  # ICAT has them already
        deadline = time.monotonic() + 10
        while box.pending("icat") and time.monotonic() < deadline:
            time.sleep(0.02)
            d.drain()
        assert box.pending("icat") == 0 and not box.dead_letters("icat")
        assert server.count("Dataset") == 1 and server.count("DatasetParameter") == 6
        assert sorted(values_by_type(server).values()) == pytest.approx([base + i / 100 for i in range(6)])
    box.close()


def test_image_range_records_are_acknowledged_and_never_overwrite_the_dataset(sink, server, dataset, caplog):
    own = Record(dataset, "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run="a")).to_envelope()
    ranges = [Record(dataset.child(image_range=r), "mmcat_collection.exposure_time", v, "seconds", Provenance(run="a")).to_envelope()
              for r, v in (("1-100", 0.02), ("101-200", 0.05))]
    with caplog.at_level(logging.WARNING, logger="mxcat.sinks.icat"):
        assert sink.put([own]).stored == [own["id"]]
        r = sink.put(ranges)
        r2 = sink.put(ranges[:1])
    assert sorted(r.stored) == sorted(e["id"] for e in ranges) and not r.rejected and r2.stored == [ranges[0]["id"]]
    assert values_by_type(server) == {"mmcat_collection.exposure_time": 0.01}  # the dataset's own value stays
    assert server.count("DatasetParameter") == 1
    assert sum("image-range records stay in the embedded catalogue" in m for m in caplog.messages) == 1


def test_a_dataset_name_of_another_sample_is_refused_with_a_hint(sink, server, onto, dataset):
    other = dataset.child(sample="lyso2")
    sink.put([Record(dataset, "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run="a")).to_envelope()])
    env = Record(other, "mmcat_collection.exposure_time", 0.02, "seconds", Provenance(run="a")).to_envelope()
    for s in (sink, make_sink(server, onto)):  # the sink that created it (cached), and one that finds it in ICAT
        r = s.put([env])
        assert "unique per investigation" in r.rejected[env["id"]] and "{sample}" in r.rejected[env["id"]]
    assert server.count("Dataset") == 1
    named = make_sink(server, onto, dataset_name="{sample}_{dataset}")
    assert named.put([env]).stored == [env["id"]] and server.rows("Dataset", name="lyso2_lyso1_1_1")


def test_esrf_names_convert_units(server, onto, dataset):
    s = make_sink(server, onto, names="esrf")
    s.sync_parameter_types()
    proc = dataset.child(processing="autoPROC")
    env = Record(proc, "reflns.pdbx_Rmerge_I_obs", 0.074, "none", Provenance(run="a")).to_envelope()
    assert s.put([env]).stored == [env["id"]]
    assert values_by_type(server) == {"MXAutoprocIntegrationScaling_overall_r_merge": pytest.approx(7.4)}  # a fraction sent as percent


# -- refusals, races, paging --------------------------------------------------------------------------------

def test_long_string_is_refused_and_the_rest_of_the_batch_kept(sink, server, numeric_keys, dataset):
    envs = records(dataset, numeric_keys[:5])
    long = Record(dataset, "mmcat_collection.experiment_type", "x" * 4001, None, Provenance(run="a")).to_envelope()
    r = sink.put(envs[:2] + [long] + envs[2:])
    assert list(r.rejected) == [long["id"]] and "4001 characters" in r.rejected[long["id"]]  # refused before sending
    assert sorted(r.stored) == sorted(e["id"] for e in envs) and server.count("DatasetParameter") == 5
    (ds,) = server.rows("Dataset")
    pt = server.rows("ParameterType", name="mmcat_collection.experiment_type")[0]
    with pytest.raises(IcatError) as ex:  # ICAT itself refuses it too
        sink.client.write([{"DatasetParameter": {"dataset": {"id": ds["id"]}, "type": {"id": pt["id"]}, "stringValue": "x" * 4001}}])
    assert ex.value.code == "VALIDATION" and ex.value.offset == 0
    # what only ICAT can see is refused at its offset, and the rest written
    more = records(dataset.child(dataset="lyso1_1_9"), numeric_keys[:4])
    sink.put(records(dataset.child(dataset="lyso1_1_9"), numeric_keys[4:5]))  # the dataset exists: the next write is parameters only
    server.inject("VALIDATION", "refused by the test", method="POST", route="/icat/entityManager", offset=1)
    r = sink.put(more)
    assert len(r.rejected) == 1 and "refused by the test" in next(iter(r.rejected.values())) and len(r.stored) == 3


def test_object_already_exists_races_are_idempotent(sink, server, numeric_keys, dataset):
    fired: list[str] = []

    def concurrent_writer(entities: list[dict]) -> None:
        for e in entities:
            body = e.get("Dataset")
            if body and "id" not in body and "dataset" not in fired:
                fired.append("dataset")  # another client creates the same dataset first
                server.create("Dataset", investigation=body["investigation"]["id"], name=body["name"], type=body["type"]["id"],
                              sample=body.get("sample", {}).get("id"))
            body = e.get("DatasetParameter")
            if body and "id" not in body and "parameter" not in fired:
                fired.append("parameter")  # ... and one of its parameters
                server.create("DatasetParameter", dataset=body["dataset"]["id"], type=body["type"]["id"], numericValue=-1.0)

    server.before_write = concurrent_writer
    envs = records(dataset, numeric_keys[:6])
    r = sink.put(envs)
    assert fired == ["dataset", "parameter"] and sorted(r.stored) == sorted(e["id"] for e in envs) and not r.rejected
    assert server.count("Dataset") == 1 and server.count("DatasetParameter") == 6
    assert -1.0 not in values_by_type(server).values()
    assert len({(p["dataset"], p["type"]) for p in server.rows("DatasetParameter")}) == 6


def test_paging_past_the_search_cap(onto, numeric_keys, dataset):
    srv = IcatServer(facility=FAC, max_entities=50).start()
    try:
        a = make_sink(srv, onto)
        assert len(a.sync_parameter_types().created) == 293  # 293 types read back in pages of 50
        with pytest.raises(IcatError) as ex:
            a.client.search("SELECT pt FROM ParameterType pt")
        assert ex.value.code == "VALIDATION" and "more than 50" in ex.value.message
        keys = numeric_keys[:60]
        assert len(a.put(records(dataset, keys, "r1", 1.0)).stored) == 60
        b = make_sink(srv, onto)  # cold: 293 types and 60 parameters of the dataset to page through
        assert len(b.put(records(dataset, keys, "r2", 2.0)).stored) == 60
        assert srv.count("DatasetParameter") == 60 and min(values_by_type(srv).values()) == pytest.approx(2.0)
    finally:
        srv.stop()


# -- errors ---------------------------------------------------------------------------------------------------

def test_the_error_table():
    assert {code: cls for code, (cls, _) in ICAT_ERRORS.items()} == {
        "SESSION": SinkUnavailable, "INTERNAL": SinkUnavailable, "INSUFFICIENT_PRIVILEGES": SinkUnavailable,
        "BAD_PARAMETER": SinkRejected, "VALIDATION": SinkRejected, "OBJECT_ALREADY_EXISTS": SinkRejected,
        "NO_SUCH_OBJECT_FOUND": SinkRejected, "NOT_IMPLEMENTED": SinkUnavailable}
    assert isinstance(sink_error(IcatError("FROM_A_NEWER_ICAT", "?"), "icat"), SinkUnavailable)


@pytest.mark.parametrize("code, expected", [("INTERNAL", SinkUnavailable), ("NOT_IMPLEMENTED", SinkUnavailable),
                                            ("BAD_PARAMETER", SinkRejected), ("VALIDATION", SinkRejected),
                                            ("FROM_A_NEWER_ICAT", SinkUnavailable)])
def test_icat_errors_of_a_whole_batch_map_through_the_table(sink, server, numeric_keys, dataset, code, expected):
    server.inject(code, "injected", method="POST", route="/icat/entityManager")
    with pytest.raises(expected) as ex:
        sink.put(records(dataset, numeric_keys[:3]))
    assert code in str(ex.value)
    assert len(sink.put(records(dataset, numeric_keys[:3])).stored) == 3  # once ICAT is well again


def test_transport_errors(sink, server, onto, numeric_keys, dataset):
    server.inject("INTERNAL", body="<html>502 Bad Gateway</html>", status=502)
    with pytest.raises(SinkUnavailable, match="without an ICAT error"):
        sink.put(records(dataset, numeric_keys[:2]))
    gone = IcatSink("icat", url=f"http://127.0.0.1:{free_port()}", username="u", password="p", facility=FAC, timeout=2.0, ontology=onto)
    with pytest.raises(SinkUnavailable, match="unreachable"):
        gone.put(records(dataset, numeric_keys[:2]))
    assert not gone.health().ok


def test_an_account_without_rights_keeps_the_outbox_and_says_so(tmp_path, server, onto, numeric_keys, dataset):
    """INSUFFICIENT_PRIVILEGES is the account's problem, not the records': they wait (none dead-lettered) and health() names it."""
    make_sink(server, onto).sync_parameter_types()
    reader = make_sink(server, onto, username="reader", password="pw")
    assert reader.health().ok
    with pytest.raises(SinkUnavailable, match="account simple/reader lacks a permission") as ex:
        reader.put(records(dataset, numeric_keys[:2]))
    assert "INSUFFICIENT_PRIVILEGES" in str(ex.value) and "administrator" in str(ex.value)
    h = reader.health()
    assert not h.ok and "simple/reader" in h.detail
    box = Outbox(tmp_path / "outbox.sqlite")
    d = Deliverer(box, {"icat": reader}, batch_size=8, backoff=Backoff(initial=0.01, maximum=0.01, jitter=0.0))
    box.put(records(dataset, numeric_keys[:16]), ["icat"])
    s = d.drain()
    assert s.dead == 0 and s.delivered == 0 and box.pending("icat") == 16 and not box.dead_letters("icat")
    server.readonly.clear()  # the administrator grants the rights: the same records go through, and health() is good again
    time.sleep(0.05)
    assert d.drain().delivered == 16 and reader.health().ok
    box.close()


def test_a_facility_icat_lacks_keeps_the_records_and_health_says_so(server, onto, numeric_keys, dataset):
    s = IcatSink("icat", url=server.url, username="mxcat", password="secret", facility="NOWHERE", timeout=5.0, ontology=onto)
    assert s.health().ok  # reachable, and the account logs in
    with pytest.raises(SinkUnavailable, match="no Facility named 'NOWHERE'"):
        s.put(records(dataset, numeric_keys[:2]))
    assert not s.health().ok and "NOWHERE" in s.health().detail


def test_a_query_icat_refuses_keeps_the_records(sink, server, numeric_keys, dataset):
    """A search refused as BAD_PARAMETER (a server too old for a query) is the same for every record: unavailable, not rejected."""
    server.inject("BAD_PARAMETER", "query not understood", method="GET", route="/icat/entityManager")
    with pytest.raises(SinkUnavailable, match="refused a query"):
        sink.put(records(dataset, numeric_keys[:2]))
    assert not sink.health().ok
    assert len(sink.put(records(dataset, numeric_keys[:2])).stored) == 2 and sink.health().ok


def test_entities_deleted_in_icat_are_found_again(sink, server, numeric_keys, dataset):
    sink.put(records(dataset, numeric_keys[:4], "r1"))
    (ds,) = server.rows("Dataset")
    server.delete("Dataset", ds["id"])  # an administrator removes it (and its parameters); the sink still has the ids cached
    r = sink.put(records(dataset, numeric_keys[:4], "r2", 2.0))
    assert len(r.stored) == 4 and server.count("Dataset") == 1 and server.count("DatasetParameter") == 4


def test_icat_stopped_mid_delivery_records_wait_in_the_outbox_and_arrive_once(tmp_path, server, sink, numeric_keys, dataset):
    box = Outbox(tmp_path / "outbox.sqlite")
    d = Deliverer(box, {"icat": sink}, batch_size=25, backoff=Backoff(initial=0.05, maximum=0.2, jitter=0.0))
    first = [e for i in range(3) for e in records(dataset.child(dataset=f"a{i}"), numeric_keys[:20], "a")]
    box.put(first, ["icat"])
    assert d.drain().delivered == 60
    requests_before = server.request_count
    server.stop()  # ICAT goes away
    second = [e for i in range(3) for e in records(dataset.child(dataset=f"b{i}"), numeric_keys[:20], "b")]
    box.put(second, ["icat"])
    s = d.drain()
    assert s.delivered == 0 and s.retried > 0 and box.pending("icat") == 60
    assert {r.state for r in box.status()} == {"DONE", "PENDING"}
    server.start()  # back, with its data and the sink's session
    delivered = drain_until_delivered(d, box, "icat")
    assert box.pending("icat") == 0 and delivered == 60
    params = server.rows("DatasetParameter")
    assert len(params) == 120 and len({(p["dataset"], p["type"]) for p in params}) == 120
    assert server.count("Dataset") == 6
    assert server.request_count - requests_before < 30  # a handful of requests per batch, not one per key
    box.close()
