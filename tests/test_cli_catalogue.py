"""`mxcat push|show|query|deliver|outbox|config` end to end on the embedded default."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import run


@pytest.fixture()
def doc(tmp_path, dataset):
    d = {"subject": dataset.to_dict(), "provenance": {"run": "collect-1", "program": "MXCuBE", "version": "4.0"},
         "values": {"mmcat_collection.exposure_time": 0.01, "mmcat_collection.detector_distance": {"value": 0.21, "unit": "m"},
                    "MX_numberOfImages": 3600, "mmcat_collection.transmission": 150},
         "tables": {"mmcat_live_image": [{"image_number": 1, "n_spots_total": 12}, {"image_number": 2, "n_spots_total": 15}]}}
    p = tmp_path / "dc.json"
    p.write_text(json.dumps(d))
    return p


def test_push_show_query(capsys, data_dir, doc, dataset):
    code, out, _ = run(["push", str(doc)], capsys)
    assert code == 0
    assert "3 record(s), 1 table(s): 4 new" in out and "rejected mmcat_collection.transmission" in out
    code, out, _ = run(["push", str(doc)], capsys)
    assert "4 unchanged" in out
    code, out, _ = run(["query", "mmcat_collection.exposure_time < 0.1", "--json"], capsys)
    assert [h["path"] for h in json.loads(out)] == [dataset.path]
    code, out, _ = run(["show", dataset.path, "--json"], capsys)
    v = json.loads(out)
    recs = {r["key"]: r for r in v["records"]["mmcat_collection"]}
    assert recs["mmcat_collection.detector_distance"]["value"] == 210.0 and recs["mmcat_collection.detector_distance"]["unit"] == "millimetres"
    assert recs["mmcat_collection.number_of_images"]["value"] == 3600 and recs["mmcat_collection.exposure_time"]["program"] == "MXCuBE"
    assert v["tables"][0]["n_rows"] == 2
    code, out, _ = run(["show", dataset.id[:10]], capsys)
    assert code == 0 and "exposure_time" in out and "MXCuBE 4.0" in out


def test_outbox_commands(capsys, data_dir, doc):
    run(["push", str(doc)], capsys)
    code, out, _ = run(["outbox", "status", "--json"], capsys)
    st = json.loads(out)
    assert st["entries"] == 4 and st["rejections"] == 1
    assert {(d["sink"], d["state"], d["count"]) for d in st["deliveries"]} == {("embedded", "DONE", 4)}
    code, out, _ = run(["outbox", "rejections"], capsys)
    assert "out of range" in out
    code, out, _ = run(["outbox", "purge", "--done-older-than", "0s"], capsys)
    assert "purged 4" in out
    code, out, err = run(["outbox", "purge", "--done-older-than", "soon"], capsys)
    assert code == 3 and "not a duration" in err
    code, out, _ = run(["outbox", "retry", "--dead"], capsys)
    assert code == 0


def test_records_wait_when_the_catalogue_is_down_and_deliver_later(capsys, data_dir, doc, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"version: 1\nsinks:\n  embedded:\n    type: embedded\n    options:\n      path: {tmp_path}/nodir/sub/../x/cat.sqlite\n"
                   f"  down:\n    type: flaky\n    options:\n      fail_first: 1000\n")
    code, out, _ = run(["--config", str(cfg), "push", str(doc)], capsys)
    assert code == 0 and "waiting" in out
    code, out, _ = run(["--config", str(cfg), "outbox", "status", "--json"], capsys)
    states = {(d["sink"], d["state"]): d["count"] for d in json.loads(out)["deliveries"]}
    assert states[("down", "PENDING")] == 4 and states[("embedded", "DONE")] == 4
    code, out, _ = run(["--config", str(cfg), "deliver", "--once"], capsys)
    assert code == 0


def test_config_commands(capsys, data_dir, tmp_path):
    code, out, _ = run(["config", "check"], capsys)
    assert code == 0 and "sink embedded: ok" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\noutbox:\n  colour: red\n")
    code, _, err = run(["--config", str(bad), "config", "show"], capsys)
    assert code == 3 and "outbox.colour" in err and str(bad) in err


def test_malformed_push_file_names_file_and_line(capsys, data_dir, tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"subject": {"beamline": "b"},\n "values": {"x": 1,}\n}')
    code, _, err = run(["push", str(p)], capsys)
    assert code == 5 and f"{p}:2" in err


def test_deliver_runs_in_the_background_until_stopped(capsys, data_dir, doc, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"version: 1\nsinks:\n  embedded:\n    type: embedded\n    options:\n      path: {tmp_path}/cat.sqlite\n"
                   "  slow:\n    type: flaky\n    options:\n      fail_first: 1\n")
    run(["--config", str(cfg), "push", str(doc)], capsys)
    code, out, _ = run(["--config", str(cfg), "deliver", "--timeout", "2"], capsys)
    assert code == 0 and "delivering to embedded, slow" in out


def test_client_record_raises_on_a_rejected_value(data_dir, dataset):
    from mxcat.client import Catalogue
    from mxcat.errors import ValidationError

    with Catalogue.open() as cat:
        cat.record(dataset, "mmcat_collection.exposure_time", 0.5)
        with pytest.raises(ValidationError, match="out of range"):
            cat.record(dataset, "mmcat_collection.transmission", 250)
        assert cat.show(dataset).records["mmcat_collection"][0]["value"] == 0.5
