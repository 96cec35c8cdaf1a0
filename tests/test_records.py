"""Subjects, provenance and record identity; the JSON push format; routing by ontology entity."""

from __future__ import annotations

import pytest

from mxcat.errors import ValidationError
from mxcat.ingest import prepare, route
from mxcat.records import Batch, Provenance, Record, Subject, batch_from_json


def test_subject_identity_is_its_path(dataset):
    again = Subject.parse(dataset.path)
    assert again == dataset and again.id == dataset.id
    assert dataset.kind == "dataset"
    assert dataset.parent.kind == "sample" and dataset.parent.dataset is None
    assert dataset.at("beamline") == Subject(facility="ESRF", beamline="ID30A-1")
    assert dataset.at("processing") is None
    proc = dataset.child(processing="xia2-1")
    assert proc.kind == "processing" and proc.parent == dataset


@pytest.mark.parametrize("bad", [{"dataset": "a/b", "beamline": "x"}, {"beamline": ""}, {}, {"beamline": "x", "shelf": "y"}])
def test_bad_subjects_are_rejected(bad):
    with pytest.raises(ValidationError):
        Subject.from_dict(bad)


def test_record_identity_is_subject_key_and_run(dataset):
    p1 = Provenance(run="r1", program="autoPROC")
    a = Record(dataset, "mmcat_collection.exposure_time", 0.01, "seconds", p1)
    b = Record(dataset, "mmcat_collection.exposure_time", 0.02, "seconds", Provenance(run="r1", program="other"))
    c = Record(dataset, "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run="r2"))
    assert a.id == b.id  # same subject, key and run: an update of the same record
    assert a.id != c.id  # another run is another record; the first is kept


def test_a_new_processing_run_is_a_new_subject(dataset):
    first = dataset.child(processing="autoPROC-run1")
    second = dataset.child(processing="autoPROC-run2")
    assert first.id != second.id and first.parent == second.parent == dataset


def test_routing_by_entity(dataset):
    proc = dataset.child(processing="p1")
    assert route(proc, "dataset") == dataset
    assert route(proc, "beamline") == dataset.at("beamline")
    assert route(proc, "processing") == proc
    with pytest.raises(ValueError, match="attach it to a processing subject"):
        route(dataset, "processing")
    with pytest.raises(ValueError, match="names no sample"):
        route(Subject(beamline="ID30A-1", dataset="d1"), "sample")


def test_prepare_keeps_good_values_routes_and_rejects_bad(onto, dataset):
    proc = dataset.child(processing="p1")
    b = Batch(proc, Provenance(run="r1", source="/data/x.xml"))
    b.add("reflns.d_resolution_high", 1.6).add("diffrn_radiation_wavelength.wavelength", 0.98)
    b.add("reflns.percent_possible_obs", 101).add("no.such_key", 1).add("MX_exposureTime", 0.02)
    b.add_table("mmcat_live_image", [{"image_number": 1, "n_spots_total": 3, "bogus": 1}, {"image_number": 2, "n_spots_total": -4}])
    out = prepare(b, onto)
    by_key = {r.key: r for r in out.records}
    assert by_key["reflns.d_resolution_high"].subject == proc
    assert by_key["diffrn_radiation_wavelength.wavelength"].subject == dataset
    assert by_key["mmcat_collection.exposure_time"].subject == dataset
    reasons = {r.key: r.reason for r in out.rejected}
    assert "out of range" in reasons["reflns.percent_possible_obs"]
    assert "no.such_key" in reasons
    assert "column dropped" in reasons["mmcat_live_image.bogus"]
    assert "row 1" in reasons["mmcat_live_image.n_spots_total"]
    (table,) = out.tables
    assert table.subject == dataset and table.columns == ("image_number", "n_spots_total") and table.rows == ((1, 3), (2, None))
    assert all(r.source == "/data/x.xml" for r in out.rejected)


def test_push_format(dataset):
    doc = {"subject": dataset.to_dict(), "provenance": {"run": "c1", "program": "MXCuBE"},
           "values": {"mmcat_collection.exposure_time": 0.01, "mmcat_collection.detector_distance": {"value": 0.2, "unit": "m"}},
           "tables": {"mmcat_live_image": [{"image_number": 1}]}}
    b = batch_from_json(doc)
    assert b.subject == dataset and b.provenance.run == "c1"
    assert [(o.key, o.value, o.unit) for o in b.observations][1] == ("mmcat_collection.detector_distance", 0.2, "m")
    with pytest.raises(ValidationError, match="unknown top-level"):
        batch_from_json({**doc, "extra": 1})
    with pytest.raises(ValidationError, match="run"):
        batch_from_json({**doc, "provenance": {"program": "x"}})


def test_flattened_and_table_items_need_their_proper_form(onto, dataset):
    proc = dataset.child(processing="p1")
    b = Batch(proc, Provenance(run="r1")).add("reflns_shell.pdbx_CC_half", 0.5).add("mmcat_live_image.n_spots_total", 3)
    b.add("reflns_shell.outer.pdbx_CC_half", 0.5)
    out = prepare(b, onto)
    assert [r.key for r in out.records] == ["reflns_shell.outer.pdbx_CC_half"]
    reasons = " ".join(r.reason for r in out.rejected)
    assert "needs a row selector" in reasons and "travels as a table" in reasons


@pytest.mark.parametrize("bad", ["a\x00b", "tab\there", "new\nline", "del\x7f", "lone\ud800", "x\ufffe", "a/b", " "])
def test_subject_names_refuse_characters_catalogues_cannot_carry(bad):
    with pytest.raises(ValidationError, match=r"subject\.sample"):
        Subject(facility="ESRF", beamline="ID30A-1", sample=bad)
