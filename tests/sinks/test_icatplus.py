"""The ICAT+ sink against a real STOMP broker (RabbitMQ's STOMP plugin on 127.0.0.1:61613), checked with pyicat-plus.

What the sink sends is read back by a stomp.py consumer: the XML dataset message (namespace,
fields, ESRF names, values as pyicat-plus formats them, ``persistent`` header), update messages,
processed datasets with their inputs, sample values inherited by datasets, redelivery without
repeats, failover past a dead broker, credentials kept out of logs, and a broker that stops or drops
connections mid-delivery: records wait in the outbox and every dataset arrives, repeats (STOMP is
at-least-once) only with the same ``mxcat_message_id``. ESRF's own client library pyicat-plus
builds the same datasets (its serializer, ``store_processed_data`` writing to a file, its update
client sending through the broker) and parses mxcat's XML with its XSD model. Each test uses its own
queues, deleted at the end of the module.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import warnings
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

pytest.importorskip("stomp")

from mxcat.deliver import Backoff, Deliverer  # noqa: E402
from mxcat.errors import ConfigError, SinkUnavailable  # noqa: E402
from mxcat.ingest import prepare  # noqa: E402
from mxcat.outbox import Outbox  # noqa: E402
from mxcat.records import Batch, Provenance, Record, Subject, Table  # noqa: E402
from mxcat.sinks import create  # noqa: E402
from mxcat.sinks.icatplus import NAMESPACE, IcatPlusSink  # noqa: E402
from tests import stomp_broker as sb  # noqa: E402

_PROBLEM = sb.broker_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or "")
needs_ctl = pytest.mark.skipif(not sb.have_rabbitmqctl(), reason="needs rabbitmqctl of the local RabbitMQ (users, restarts)")
NS = {"t": NAMESPACE}
RAW = "/data/visitor/mx2532/id30a1/20261121/RAW_DATA/lyso1/lyso1_1_1"


@pytest.fixture(scope="module")
def names():
    q = sb.QueueNames()
    yield q
    q.cleanup()
    if sb.have_rabbitmqctl():
        sb.ensure_up()  # whatever a restart test left behind, the broker is up when the module ends


@pytest.fixture()
def queues(names):
    return {"dataset_queue": f"/queue/{names.new('ingest')}", "update_queue": f"/queue/{names.new('update')}"}


@pytest.fixture()
def make_sink(tmp_path, queues):
    made = []

    def make(**kw):
        opts = {"brokers": [f"{sb.HOST}:{sb.PORT}"], "login": sb.LOGIN, "passcode": sb.PASSCODE,
                "state_path": str(tmp_path / "icatplus.sqlite"),
                "machine": "bl-host.esrf.fr", "timeout": 5.0, **queues, **kw}
        s = IcatPlusSink("icatplus", **opts)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture()
def consume(queues):
    opened = []

    def open_(which="dataset_queue"):
        c = sb.Consumer(queues[which])
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()


def raw_subject(dataset="lyso1_1_1", sample="lyso1"):
    return Subject(facility="ESRF", beamline="ID30A-1", proposal="MX2532", session="20261121", sample=sample, dataset=dataset)


def poisoned(envs, **levels):
    """Envelopes as an older outbox may hold them: subject names that ``Subject`` refuses today."""
    out = []
    for e in envs:
        e = dict(e, subject=dict(e["subject"], **levels))
        e["subject_id"] = e["subject_id"] + "-" + "-".join(levels)
        out.append(e)
    return out


def envelopes(onto, subject, values, run="r1", created="2026-11-21T09:10:00+00:00"):
    b = Batch(subject, Provenance(run=run, program="mxcube", created=created))
    for key, value in values.items():
        b.add(key, value)
    p = prepare(b, onto)
    assert not p.rejected, p.rejected
    return [r.to_envelope() for r in p.records]


RAW_VALUES = {
    "diffrn_radiation_wavelength.wavelength": 0.9795, "mmcat_collection.number_of_images": 3600, "mmcat_collection.exposure_time": 0.01,
    "mmcat_collection.beam_size_x": 50.0, "mmcat_collection.oscillation_width": 0.1, "mmcat_collection.experiment_type": "OSC",
    "mmcat_collection.start_time": "2026-11-21T09:00:00+00:00", "mmcat_collection.end_time": "2026-11-21T09:05:00+00:00",
    "mmcat_collection.kappa_start": 0.0, "mmcat_collection.ring_current": 199.6,
}
PYICAT_RAW = {  # the same dataset as a beamline would give it to pyicat-plus, in ESRF names and units
    "MX_wavelength": 0.9795, "InstrumentMonochromator_wavelength": 0.9795, "MX_numberOfImages": 3600, "MX_exposureTime": 0.01,
    "MX_beamSizeAtSampleX": 0.05, "MX_oscillationRange": 0.1, "MX_axis_range": 0.1, "MX_scanType": "OSC", "InstrumentSource_current": 199.6,
    "Sample_name": "lyso1", "startDate": "2026-11-21T09:00:00+00:00", "endDate": "2026-11-21T09:05:00+00:00",
    "machine": "bl-host.esrf.fr", "software": "mxcat_v0.1.0",
}


def parsed(body: str) -> tuple[dict, dict[str, str]]:
    """pyicat-plus's own reading of a dataset message: root fields, and parameters by name."""
    from pyicat_plus._icat_messaging.deserializers.xml import deserialize_message

    kind, doc = deserialize_message(body.encode() if isinstance(body, str) else body)
    assert kind == "dataset"
    params = {p["name"]: p["value"] for p in doc.pop("parameter")}
    return doc, params


def pyicat_xml(**kw) -> bytes:
    from pyicat_plus._icat_messaging.serializers.dataset import serialize_dataset_message

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return serialize_dataset_message(**kw)


# -- dataset messages ---------------------------------------------------------------------------------


def test_dataset_message_is_esrf_xml_with_persistent_header(make_sink, consume, onto):
    sink = make_sink()
    envs = envelopes(onto, raw_subject(), RAW_VALUES)
    r = sink.put(envs)
    assert sorted(r.stored) == sorted(e["id"] for e in envs) and not r.rejected
    got = consume().wait(1)
    assert len(got) == 1 and consume("update_queue").settle(0.2) == []
    msg = got[0]
    assert msg.headers["persistent"] == "true"
    assert len(msg.headers["mxcat_message_id"]) == 32
    root = ET.fromstring(msg.body)
    assert root.tag == f"{{{NAMESPACE}}}dataset" and root.get("complete") == "true"
    assert [c.tag.split("}")[1] for c in root][:7] == ["investigation", "instrument", "name", "location", "startDate", "endDate", "sample"]
    assert root.findtext("t:investigation", namespaces=NS) == "mx2532" and root.findtext("t:instrument", namespaces=NS) == "id30a-1"
    assert root.findtext("t:location", namespaces=NS) == RAW and root.findtext("t:sample/t:name", namespaces=NS) == "lyso1"
    assert root.findtext("t:startDate", namespaces=NS) == "2026-11-21T09:00:00Z"
    params = {p.findtext("t:name", namespaces=NS): p.findtext("t:value", namespaces=NS) for p in root.findall("t:parameter", NS)}
    assert params["MX_wavelength"] == params["InstrumentMonochromator_wavelength"] == "0.9795"
    assert params["MX_numberOfImages"] == "3600" and params["MX_beamSizeAtSampleX"] == "0.05"  # micrometres -> ESRF's millimetres
    assert params["MX_axis_range"] == "0.1" and params["InstrumentSource_current"] == "199.6"
    assert params["datasetName"] == "lyso1_1_1" and params["Sample_name"] == "lyso1" and params["complete"] == "true"
    assert not any(n.startswith("mmcat_") for n in params)  # kappa_start has no ESRF name: not sent

    # ESRF's XSD model accepts it, strictly
    from pyicat_plus._icat_messaging.models.xsd.dataset import Dataset
    from xsdata.formats.dataclass.parsers import XmlParser
    from xsdata.formats.dataclass.parsers.config import ParserConfig

    model = XmlParser(config=ParserConfig(fail_on_unknown_properties=True)).from_string(msg.body, Dataset)
    assert model.name == "lyso1_1_1" and str(model.end_date) == "2026-11-21T09:05:00Z" and len(model.parameter) == len(params)


def test_same_message_as_pyicat_plus_builds(make_sink, consume, onto):
    sink = make_sink()
    sink.put(envelopes(onto, raw_subject(), RAW_VALUES))
    mine = parsed(consume().wait(1)[0].body)
    theirs = parsed(pyicat_xml(beamline="ID30A-1", proposal="MX2532", dataset="lyso1_1_1", path=RAW, metadata=dict(PYICAT_RAW)))
    assert mine == theirs


def test_processed_dataset_as_store_processed_data_writes_it(make_sink, consume, onto, tmp_path):
    from pyicat_plus.client.main import IcatClient

    sink = make_sink()
    other = raw_subject("lyso1_1_2")
    sink.put(envelopes(onto, other, RAW_VALUES))  # sent before: its location is known by subject id
    other_path = RAW[:-1] + "2"
    directory = "/data/visitor/mx2532/id30a1/20261121/RAW_DATA/lyso1/run_01"
    proc = raw_subject().child(processing="autoPROC", inputs=(other.id,))
    values = {"reflns_shell.outer.pdbx_CC_half": 0.41, "reflns.pdbx_Rmerge_I_obs": 0.052, "reflns.d_resolution_high": 1.52,
              "mmcat_processing.pipeline": "autoPROC", "mmcat_processing.message": "fine"}
    batch = envelopes(onto, raw_subject(), {**RAW_VALUES, "mmcat_collection.directory": directory})  # raw and processed together
    batch += envelopes(onto, proc, values, run="p1", created="2026-11-21T10:00:00+00:00")
    assert not sink.put(batch).rejected
    got = consume().wait(3)
    assert len(got) == 3
    assert parsed(got[1].body)[0]["location"] == directory  # the directory MXCuBE gave is the raw dataset's location
    mine = parsed(got[2].body)
    assert mine[1]["input_datasets"] == f"{directory},{other_path}"
    assert mine[1]["MXAutoprocIntegrationScaling_overall_r_merge"] == "5.2"  # fraction -> ESRF's percent
    path = "/data/visitor/mx2532/id30a1/20261121/PROCESSED_DATA/lyso1/lyso1_1_1/autoPROC"
    client = IcatClient(metadata_urls=[f"127.0.0.1:{sb.free_port()}"])  # never connects: store_filename writes the message
    metadata = {"MXAutoprocIntegrationScaling_outer_cc_half": 0.41, "MXAutoprocIntegrationScaling_overall_r_merge": 5.2,
                "MXAutoprocIntegrationScaling_overall_resolution_limit_high": 1.52, "Process_program": "autoPROC", "Sample_name": "lyso1",
                "startDate": "2026-11-21T10:00:00+00:00", "endDate": "2026-11-21T10:00:00+00:00", "machine": "bl-host.esrf.fr",
                "software": "mxcat_v0.1.0"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.store_processed_data(beamline="ID30A-1", proposal="MX2532", dataset="autoPROC", path=path, raw=[directory, other_path],
                                    store_filename=str(tmp_path / "processed"), metadata=metadata)
    assert mine == parsed((tmp_path / "processed.xml").read_bytes())


# -- updates, inheritance, idempotency -------------------------------------------------------------------


def test_later_records_are_updates_like_pyicat_plus_sends(make_sink, consume, onto):
    from pyicat_plus.client._internal.update_metadata import IcatUpdateMetadataClient

    sink = make_sink()
    sink.put(envelopes(onto, raw_subject(), {"diffrn_radiation_wavelength.wavelength": 0.9795}))
    sink.put(envelopes(onto, raw_subject(), {"mmcat_collection.transmission": 12.5, "mmcat_collection.kappa_start": 1.0}, run="r2"))
    assert len(consume().settle(0.3)) == 1
    updates = consume("update_queue").wait(1)
    assert len(updates) == 1 and updates[0].headers["persistent"] == "true"
    client = IcatUpdateMetadataClient(queue_urls=[f"127.0.0.1:{sb.free_port()}"], queue_name="icatUpdateDatasetMetadata")
    theirs: list[bytes] = []
    client._client.send = theirs.append  # what it would send (stompest cannot log in to RabbitMQ: it sends an empty host header)
    client.send_update_metadata(proposal="mx2532", beamline="id30a-1", dataset_paths=[RAW], metadata_name="MX_transmission",
                                metadata_value="12.5")
    assert updates[0].body.encode() == theirs[0]  # byte for byte
    assert json.loads(updates[0].body)["datasetPaths"] == [RAW]


def test_redelivery_sends_nothing_twice_and_a_changed_value_once(make_sink, consume, onto, tmp_path):
    envs = envelopes(onto, raw_subject(), RAW_VALUES)
    sink = make_sink()
    assert len(sink.put(envs).stored) == len(envs)
    assert len(sink.put(envs).stored) == len(envs)  # a crash before the outbox's acknowledgement: delivered again
    again = make_sink()  # another process, same state file
    assert len(again.put(list(reversed(envs))).stored) == len(envs)
    changed = [dict(e, value=0.98) if e["key"] == "diffrn_radiation_wavelength.wavelength" else e for e in envs]
    again.put(changed)
    again.put(envs)  # and back, and again: each change is a new update, with a new message id
    again.put(changed)
    assert len(consume().settle(0.3)) == 1
    got = consume("update_queue").settle(0.3)
    ups = [(json.loads(m.body)["metadataName"], json.loads(m.body)["metadataValue"]) for m in got]
    assert ups == [(n, v) for v in ("0.98", "0.9795", "0.98") for n in ("InstrumentMonochromator_wavelength", "MX_wavelength")]
    assert len({m.headers["mxcat_message_id"] for m in got}) == 6 and got[0].body == got[4].body


def test_sample_values_are_inherited_by_its_datasets(make_sink, consume, onto):
    sink = make_sink()
    sample_vals = envelopes(onto, raw_subject(), {"mmcat_sample.protein_acronym": "LYS"})
    assert {e["subject"].get("dataset") for e in sample_vals} == {None}  # routed to the sample
    sink.put(sample_vals + envelopes(onto, raw_subject(), {"mmcat_collection.exposure_time": 0.01}))
    sink.put(envelopes(onto, raw_subject("lyso1_1_2"), {"mmcat_collection.exposure_time": 0.02}))
    sink.put(envelopes(onto, raw_subject("other_1_1", sample="other"), {"mmcat_collection.exposure_time": 0.03}))
    got = [parsed(m.body)[1] for m in consume().wait(3)]
    assert [p.get("SampleProtein_acronym") for p in got] == ["LYS", "LYS", None]
    sink.put(envelopes(onto, raw_subject(), {"mmcat_sample.container_position": "7"}, run="r9"))
    ups = [json.loads(m.body) for m in consume("update_queue").wait(1)]
    assert len(ups) == 1 and ups[0]["metadataName"] == "SampleTrackingContainer_position"
    assert ups[0]["datasetPaths"] == [RAW, RAW[:-1] + "2"]


def test_what_is_skipped_sent_or_refused(make_sink, consume, onto, tmp_path):
    sink = make_sink(unmapped="send")
    s = raw_subject()
    envs = envelopes(onto, s, {"mmcat_collection.kappa_start": 12.0, "mmcat_collection.comments": "x" * 4001})
    table = Table(s, "mmcat_live_image", ("image_number", "n_spots_total"), ((1, 5),), Provenance(run="t")).to_envelope()
    rng = Record(s.child(image_range="1-100"), "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run="i")).to_envelope()
    nosample = Record(Subject(beamline="ID30A-1", proposal="mx1", dataset="d1"), "mmcat_collection.exposure_time", 0.01, "seconds",
                      Provenance(run="n")).to_envelope()
    r = sink.put(envs + [table, rng, nosample])
    long_id = next(e["id"] for e in envs if e["key"] == "mmcat_collection.comments")
    assert set(r.rejected) == {long_id, nosample["id"]}
    assert "4000" in r.rejected[long_id] and "sample" in r.rejected[nosample["id"]]
    assert {table["id"], rng["id"]} <= set(r.stored)
    c = consume()
    params = parsed(c.wait(1)[0].body)[1]
    assert params["mmcat_collection.kappa_start"] == "12.0"  # unmapped: send -> the mmCAT flat key
    skip = make_sink(unmapped="skip", state_path=str(tmp_path / "other.sqlite"))
    only_unmapped = envelopes(onto, raw_subject("d9"), {"mmcat_collection.kappa_start": 1.0})
    assert skip.put(only_unmapped).stored == [only_unmapped[0]["id"]]
    assert len(c.settle(0.3)) == 1  # nothing sent for a dataset with nothing ICAT+ knows



# -- texts no message can carry, dates that are not dates -------------------------------------------------


def _well_formed(frames):
    """Every SEND frame whole (no NUL cut it) and its body well-formed XML or JSON."""
    for f in frames:
        assert b"\x00" not in f.body
        if f.header("destination") == "/queue/ingest":
            ET.fromstring(f.body)
        else:
            json.loads(f.body)


def test_texts_xml_cannot_carry_refuse_their_records_and_name_the_field(onto):
    """A NUL, a control character or a lone surrogate in any text of a message refuses the records it would carry.

    Without the check a NUL cut the frame (the broker took the tail for a command) and a control
    character made the dataset message malformed XML; the recorder answers the cut frame as RabbitMQ does.
    """
    rec = sb.FrameRecorder()
    sink = IcatPlusSink("wire", brokers=[f"127.0.0.1:{rec.port}"], state_path=":memory:", unmapped="send", timeout=3,
                        dataset_queue="/queue/ingest", update_queue="/queue/update")
    try:
        vals = {"diffrn_radiation_wavelength.wavelength": 0.98}
        proc = raw_subject("d5").child(processing="autoPROC", inputs=("/data/visitor/mx2532/in\x1fput",))
        cases = {  # the field the reason must name -> the records that must be refused
            "subject.sample": poisoned(envelopes(onto, raw_subject("d0"), vals), sample="bad\x00x"),
            "subject.dataset": poisoned(envelopes(onto, raw_subject("d1"), vals), dataset="d\x01"),
            "subject.session": poisoned(envelopes(onto, raw_subject("d2"), vals), session="s\x0b"),
            "subject input": envelopes(onto, proc, {"reflns.d_resolution_high": 1.5}),
        }
        good = envelopes(onto, raw_subject("d4"), {**vals, "mmcat_collection.comments": "fine"})
        bad_value = envelopes(onto, raw_subject("d4"), {"mmcat_collection.comments": "not\x00fine"}, run="r2")
        bad_name = [dict(good[0], id="bad-name", key="mmcat_collection.odd\x02key")]
        surrogate = [dict(good[0], id="surrogate", value="0.98\ud800")]  # not even UTF-8: stomp.py could not encode the frame
        r = sink.put([e for envs in cases.values() for e in envs] + good + bad_value + bad_name + surrogate)
        for what, envs in cases.items():
            for e in envs:  # names Subject refuses (older outboxes) are malformed; inputs are checked by the sink
                why = r.rejected[e["id"]]
                assert what in why and ("XML 1.0" in why or "malformed subject" in why), (what, why)
        assert "value of MX_comments" in r.rejected[bad_value[0]["id"]] and "U+0000" in r.rejected[bad_value[0]["id"]]
        assert "parameter name" in r.rejected["bad-name"] and "U+D800" in r.rejected["surrogate"]
        assert sorted(r.stored) == sorted(e["id"] for e in good)
        # a dataset already sent: its later record goes as an update, and a value no update can carry is refused too
        later = envelopes(onto, raw_subject("d4"), {"mmcat_collection.comments": "x\x1by"}, run="r3")
        assert "value of MX_comments" in sink.put(later).rejected[later[0]["id"]]
        sample_value = envelopes(onto, raw_subject("d4"), {"mmcat_sample.protein_acronym": "LY\x00S"}, run="r4")
        assert "SampleProtein_acronym" in sink.put(sample_value).rejected[sample_value[0]["id"]]
        deadline = time.monotonic() + 3
        while len(rec.sent()) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        sent = rec.sent()
        assert rec.bad == [] and [parsed(f.body)[0]["name"] for f in sent] == ["d4"]
        _well_formed(sent)
        assert parsed(sent[0].body)[1]["MX_comments"] == "fine"
    finally:
        sink.close()
        rec.close()
    for option in ("machine", "location_template", "processed_location_template"):
        with pytest.raises(ConfigError, match=option):
            IcatPlusSink("x", brokers=["127.0.0.1:1"], state_path=":memory:", **{option: "/data/\x01{dataset}"})


def test_a_poison_subject_does_not_block_or_truncate_the_batch(make_sink, consume, onto, tmp_path):
    """Through the outbox and RabbitMQ: records naming a subject with NUL or control characters go DEAD with
    the field in the reason; the other datasets of the same batch are delivered, whole, in one cycle."""
    vals = {"diffrn_radiation_wavelength.wavelength": 0.98, "mmcat_collection.exposure_time": 0.01}
    bad = poisoned(envelopes(onto, raw_subject("p0"), vals), sample="bad\x00x") \
        + poisoned(envelopes(onto, raw_subject("p1"), vals), dataset="p\x011")
    good = [e for i in range(2, 5) for e in envelopes(onto, raw_subject(f"p{i}"), vals)]
    box = Outbox(tmp_path / "o.sqlite")
    box.put(bad + good, ["icatplus"])
    d = Deliverer(box, {"icatplus": make_sink()}, backoff=Backoff(initial=0.01, maximum=0.01, jitter=0.0))
    s = d.drain(timeout=10)
    assert (s.delivered, s.retried, box.pending("icatplus")) == (len(good), 0, 0), s.errors
    dead = {row[1]: row[3] for row in box.dead_letters("icatplus")}
    assert set(dead) == {e["id"] for e in bad}
    assert all("malformed subject" in why and ("subject.sample" in why or "subject.dataset" in why) for why in dead.values())
    got = consume().settle(0.5)
    assert sorted(parsed(m.body)[0]["name"] for m in got) == ["p2", "p3", "p4"]
    for m in got:
        ET.fromstring(m.body)
    box.close()


def test_a_created_that_is_not_iso_8601_does_not_block_the_batch(make_sink, consume, onto, tmp_path, caplog):
    """provenance.created is free text to the outbox: dates fall back to the other records, then to the delivery
    time (pyicat-plus's default for a dataset without dates), logged once; every dataset is delivered in one cycle."""
    vals = {"diffrn_radiation_wavelength.wavelength": 0.98}
    envs = envelopes(onto, raw_subject("t0"), vals, run="t0", created="21/11/2026 09:00")  # no usable date at all
    envs += envelopes(onto, raw_subject("t1"), vals, run="t1", created="yesterday")  # one usable date among its records
    envs += envelopes(onto, raw_subject("t1"), {"mmcat_collection.exposure_time": 0.01}, run="t1b", created="2026-11-21T09:30:00Z")
    envs += [e for i in range(2, 5) for e in envelopes(onto, raw_subject(f"t{i}"), vals, run=f"t{i}", created="2026-11-21T09:00:00+00:00")]
    box = Outbox(tmp_path / "o.sqlite")
    box.put(envs, ["icatplus"])
    d = Deliverer(box, {"icatplus": make_sink()}, backoff=Backoff(initial=0.01, maximum=0.01, jitter=0.0))
    caplog.set_level(logging.WARNING, logger="mxcat.sinks.icatplus")
    t0 = datetime.now(UTC).replace(microsecond=0)
    s = d.drain(timeout=10)
    t1 = datetime.now(UTC)
    assert (s.delivered, s.retried, box.pending("icatplus")) == (len(envs), 0, 0), s.errors
    dates = {parsed(m.body)[0]["name"]: (parsed(m.body)[1]["startDate"], parsed(m.body)[1]["endDate"]) for m in consume().wait(5)}
    assert sorted(dates) == ["t0", "t1", "t2", "t3", "t4"]
    start, end = (datetime.fromisoformat(v.replace("Z", "+00:00")) for v in dates["t0"])
    assert t0 <= start == end <= t1  # the delivery time
    assert dates["t1"] == ("2026-11-21T09:30:00Z", "2026-11-21T09:30:00Z")
    assert dates["t2"] == ("2026-11-21T09:00:00Z", "2026-11-21T09:00:00Z")
    warned = [r for r in caplog.records if "provenance.created" in r.getMessage()]
    assert len(warned) == 1 and "21/11/2026 09:00" in warned[0].getMessage()
    box.close()

# -- configuration, failover, credentials -----------------------------------------------------------------


def test_created_through_the_entry_point(tmp_path, queues, monkeypatch):
    monkeypatch.setenv("MXCAT_TEST_ICATPLUS_PASSCODE", sb.PASSCODE)
    opts = {"brokers": f"{sb.HOST}:{sb.PORT}", "login": sb.LOGIN, "passcode_env": "MXCAT_TEST_ICATPLUS_PASSCODE",
            "state_path": str(tmp_path / "s.sqlite"), **queues}
    sink = create("x", "icatplus", opts)
    try:
        assert isinstance(sink, IcatPlusSink) and sink.name == "x"
        h = sink.health()
        assert h.ok and h.detail == f"connected to {sb.HOST}:{sb.PORT}"
    finally:
        sink.close()
    with pytest.raises(ConfigError, match="unknown option"):
        create("x", "icatplus", {**opts, "passcode": "in-the-file"})  # secrets only through _env / _file
    with pytest.raises(ConfigError, match="brokers"):
        create("x", "icatplus", {**opts, "brokers": ["no-port"]})
    with pytest.raises(ConfigError, match="template"):
        create("x", "icatplus", {**opts, "location_template": "/data/{visit}"})


def test_a_dead_first_broker_fails_over_to_the_second(make_sink, consume, onto):
    dead = sb.free_port()
    sink = make_sink(brokers=[f"127.0.0.1:{dead}", f"{sb.HOST}:{sb.PORT}"])
    assert sink.put(envelopes(onto, raw_subject(), RAW_VALUES)).stored
    assert sink._link.where == f"{sb.HOST}:{sb.PORT}"
    assert len(consume().wait(1)) == 1


def test_no_broker_is_unavailable_and_records_wait(make_sink, onto, tmp_path):
    sink = make_sink(brokers=[f"127.0.0.1:{sb.free_port()}", f"127.0.0.1:{sb.free_port()}"], timeout=1.0)
    envs = envelopes(onto, raw_subject(), RAW_VALUES)
    t0 = time.monotonic()
    with pytest.raises(SinkUnavailable, match="no broker answered"):
        sink.put(envs)
    assert time.monotonic() - t0 < 5
    assert not sink.health().ok
    box = Outbox(tmp_path / "o.sqlite")
    box.put(envs, ["icatplus"])
    s = Deliverer(box, {"icatplus": sink}, backoff=Backoff(initial=0.05, jitter=0.0)).drain()
    assert s.delivered == 0 and s.retried == len(envs) and box.pending("icatplus") == len(envs)
    box.close()


@needs_ctl
def test_credentials_are_used_and_never_logged(tmp_path, queues, consume, onto, caplog):
    user, password = f"mxcat-test-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    assert sb.rabbitmqctl("add_user", user, password).returncode == 0
    try:
        sb.rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        secret = tmp_path / "passcode"
        secret.write_text(password + "\n")
        os.chmod(secret, 0o600)
        opts = {"brokers": [f"{sb.HOST}:{sb.PORT}"], "login": user, "passcode_file": str(secret), "state_path": str(tmp_path / "s.sqlite"),
                **queues}
        caplog.set_level(logging.DEBUG)
        sink = create("esrf", "icatplus", opts)
        try:
            assert sink.put(envelopes(onto, raw_subject(), RAW_VALUES)).stored
        finally:
            sink.close()
        assert len(consume().wait(1)) == 1
        secret.write_text("wrong-" + password)
        bad = create("esrf", "icatplus", {**opts, "state_path": str(tmp_path / "s2.sqlite")})
        with pytest.raises(SinkUnavailable, match="credentials") as err:
            bad.put(envelopes(onto, raw_subject("d2"), RAW_VALUES))
        bad.close()
        assert password not in str(err.value)
        assert "connected to STOMP broker" in caplog.text
        assert password not in caplog.text and password not in "".join(str(r.args) for r in caplog.records)
    finally:
        sb.rabbitmqctl("delete_user", user)


def test_frames_on_the_wire_match_pyicat_plus(tmp_path, onto):
    """Both clients write SEND frames without content-length (ActiveMQ then delivers a TextMessage), persistent."""
    from pyicat_plus.client._internal.metadata import IcatMetadataClient

    rec = sb.FrameRecorder()
    try:
        sink = IcatPlusSink("wire", brokers=[f"127.0.0.1:{rec.port}"], state_path=":memory:", machine="bl-host.esrf.fr", timeout=3)
        sink.put(envelopes(onto, raw_subject(), RAW_VALUES))
        sink.close()
        client = IcatMetadataClient(queue_urls=[f"127.0.0.1:{rec.port}"], timeout=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.send_metadata(beamline="ID30A-1", proposal="MX2532", dataset="lyso1_1_1", path=RAW, metadata=dict(PYICAT_RAW))
        client.disconnect()
        deadline = time.monotonic() + 5
        while len(rec.sent()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        mine, theirs = rec.sent()
    finally:
        rec.close()
    assert mine.header("destination") == theirs.header("destination") == "/queue/icatIngest"
    assert mine.header("persistent") == theirs.header("persistent") == "true"
    assert mine.header("content-length") is None and theirs.header("content-length") is None
    assert mine.header("receipt") and mine.header("mxcat_message_id")
    assert parsed(mine.body) == parsed(theirs.body)


def test_messages_the_broker_does_not_confirm_are_not_acknowledged(tmp_path, onto):
    rec = sb.FrameRecorder(receipts=False)  # takes frames, confirms none
    try:
        sink = IcatPlusSink("icatplus", brokers=[f"127.0.0.1:{rec.port}"], state_path=str(tmp_path / "s.sqlite"), timeout=0.5)
        envs = envelopes(onto, raw_subject(), RAW_VALUES)
        with pytest.raises(SinkUnavailable, match="receipt"):
            sink.put(envs)
        assert len(rec.sent()) == 1 and sink._state.digests(e["id"] for e in envs) == {}
        rec.receipts = True
        assert len(sink.put(envs).stored) == len(envs)  # retried: the same message, the same id
        first, second = rec.sent()
        assert first.header("mxcat_message_id") == second.header("mxcat_message_id") and first.body == second.body
        sink.close()
    finally:
        rec.close()


# -- the broker goes away ---------------------------------------------------------------------------------


def _datasets(onto, tag, n, keys=6):
    vals = dict(list(RAW_VALUES.items())[:keys])
    return [e for i in range(n) for e in envelopes(onto, raw_subject(f"{tag}{i:02d}"), vals, run=tag)]


def _check_once(messages, expected_names):
    by_name: dict[str, set[tuple[str, str]]] = {}
    for m in messages:
        by_name.setdefault(parsed(m.body)[0]["name"], set()).add((m.headers["mxcat_message_id"], m.body))
    assert sorted(by_name) == sorted(expected_names)
    # a repeat (lost receipt) is the same message with the same id: consumers drop it by mxcat_message_id
    assert all(len(v) == 1 for v in by_name.values()), {k: len(v) for k, v in by_name.items() if len(v) > 1}


@needs_ctl
def test_broker_restart_mid_delivery_loses_nothing(make_sink, queues, onto, tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite")
    sink = make_sink(timeout=2.0)
    d = Deliverer(box, {"icatplus": sink}, batch_size=24, backoff=Backoff(initial=0.05, maximum=0.2, jitter=0.0))
    first = _datasets(onto, "a", 10)
    box.put(first, ["icatplus"])
    try:
        assert d.drain().delivered == len(first)
        sb.stop_broker()  # the broker goes away between batches
        second = _datasets(onto, "b", 10)
        box.put(second, ["icatplus"])
        s = d.drain()
        assert s.delivered == 0 and s.retried > 0 and box.pending("icatplus") == len(second)
        assert not sink.health().ok
    finally:
        sb.ensure_up()
    deadline = time.monotonic() + 30
    while box.pending("icatplus") and time.monotonic() < deadline:
        time.sleep(0.1)
        d.drain()
    assert box.pending("icatplus") == 0
    with sb.Consumer(queues["dataset_queue"]) as c:
        got = c.wait(20)
        got = c.settle(0.3)
    assert len(got) == 20
    _check_once(got, [f"a{i:02d}" for i in range(10)] + [f"b{i:02d}" for i in range(10)])
    box.close()


@needs_ctl
def test_connections_dropped_while_sending_lose_nothing(make_sink, queues, onto, tmp_path):
    sink = make_sink(timeout=2.0)
    link, batches = sink._link, []
    send_all = link.send_all

    def dropping_send_all(messages):
        """The broker drops every connection after the third message of the first batch went out."""
        batches.append(len(messages))
        if len(batches) == 1:
            link.ensure()
            send, sent = link.conn.send, []

            def send_then_drop(*a, **k):
                send(*a, **k)
                sent.append(1)
                if len(sent) == 3:
                    sb.close_connections()
            link.conn.send = send_then_drop
        return send_all(messages)

    link.send_all = dropping_send_all
    box = Outbox(tmp_path / "outbox.sqlite")
    envs = _datasets(onto, "c", 12, keys=3)
    box.put(envs, ["icatplus"])
    d = Deliverer(box, {"icatplus": sink}, batch_size=len(envs), backoff=Backoff(initial=0.05, maximum=0.2, jitter=0.0))
    s = d.drain()
    assert s.retried == len(envs) and "unavailable" in s.errors[0]
    confirmed = sink._state.db.execute("SELECT count(*) FROM datasets").fetchone()[0]
    assert 0 < confirmed < 12  # the receipts that came before the drop are kept
    deadline = time.monotonic() + 20
    while box.pending("icatplus") and time.monotonic() < deadline:
        time.sleep(0.1)
        d.drain()
    assert box.pending("icatplus") == 0
    assert batches[0] == 12 and sum(batches[1:]) == 12 - confirmed  # the retry sends only what was not confirmed
    with sb.Consumer(queues["dataset_queue"]) as c:
        c.wait(12)
        got = c.settle(0.3)
    _check_once(got, [f"c{i:02d}" for i in range(12)])
    box.close()
