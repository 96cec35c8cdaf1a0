"""MXCuBE collection dictionary (JSON): values of the two fixtures, detection, damaged and wrong-kind input.

The fixtures in tests/data/adapters/ were written by the mxcat developers after mxcubecore's
collect dictionary keys (see mxcube_dc_fixtures.md there); no real dump is in the shared corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxcat.adapters._util import read_head
from mxcat.adapters.mxcube_dc import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

DATA = Path(__file__).resolve().parents[1] / "data" / "adapters"
COMPLETE = DATA / "mxcube_dc_complete.json"
MINIMAL = DATA / "mxcube_dc_minimal.json"


def test_complete_collection(onto):
    p = ADAPTER.parse(COMPLETE)
    assert p.notes == []
    assert p.program == "MXCuBE"
    assert p.hints == {"dataset": "lyso-x7_1", "sample_barcode": "HA00AU3712", "ispyb_session_id": "86419",
                       "ispyb_sample_id": "1904221"}
    assert [(r.level, r.label) for r in p.results] == [("dataset", None)]
    v, _ = values_of(p, onto)
    assert v["mmcat_collection.oscillation_start"] == pytest.approx(323.938)
    assert v["mmcat_collection.oscillation_width"] == pytest.approx(0.1)
    assert v["mmcat_collection.oscillation_overlap"] == 0.0
    assert v["mmcat_collection.number_of_images"] == 3600
    assert v["mmcat_collection.first_image_number"] == 1
    assert v["mmcat_collection.number_of_passes"] == 1
    assert v["mmcat_collection.exposure_time"] == pytest.approx(0.02)
    assert v["mmcat_collection.kappa_start"] == 0.0
    assert v["mmcat_collection.phi_start"] == 0.0
    assert v["mmcat_collection.directory"].endswith("/lyso-x7/run_01_01_datacollection")
    assert v["mmcat_collection.image_prefix"] == "lyso-x7"
    assert v["mmcat_collection.run_number"] == 1
    assert v["mmcat_collection.file_template"] == "lyso-x7_1_%04d.cbf"
    assert v["mmcat_collection.image_suffix"] == "cbf"
    assert v["mmcat_collection.experiment_type"] == "OSC"
    assert v["mmcat_collection.status"] == "Data collection successful"
    assert v["mmcat_collection.start_time"] == "2024-02-20T14:03:12"
    assert v["mmcat_collection.end_time"] == "2024-02-20T14:04:25"
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.96546)
    assert v["mmcat_collection.photon_energy"] == pytest.approx(12.842)
    assert v["mmcat_collection.detector_distance"] == pytest.approx(180.98)
    assert v["mmcat_collection.resolution_edge"] == pytest.approx(1.52)
    assert v["mmcat_collection.resolution_corner"] == pytest.approx(1.18)
    assert v["mmcat_collection.transmission"] == pytest.approx(25.0)
    assert v["mmcat_collection.flux"] == pytest.approx(2.1e12)
    assert v["mmcat_collection.flux_end"] == pytest.approx(2.05e12)
    assert v["mmcat_collection.beam_centre_x"] == pytest.approx(206.26)
    assert v["mmcat_collection.beam_centre_y"] == pytest.approx(224.49)
    assert v["mmcat_collection.beam_size_x"] == pytest.approx(50.0)  # 0.05 mm in micrometres
    assert v["mmcat_collection.beam_size_y"] == pytest.approx(30.0)
    assert v["mmcat_collection.beam_shape"] == "ellipse"
    assert v["mmcat_collection.slit_gap_horizontal"] == pytest.approx(0.5)
    assert v["mmcat_collection.slit_gap_vertical"] == pytest.approx(0.3)
    assert v["mmcat_collection.undulator_gap_1"] == pytest.approx(6.12)
    assert "mmcat_collection.undulator_gap_2" not in v  # null in the file
    assert v["mmcat_collection.synchrotron_mode"] == "7/8+1"
    assert v["mmcat_collection.centring_method"] == "optical"
    assert v["mmcat_collection.centring_position"].startswith("phi=323.938000 phiy=-0.412100")
    assert v["mmcat_collection.absorbed_dose"] == pytest.approx(0.34)
    assert v["mmcat_collection.ispyb_datacollection_id"] == 2934512
    assert v["mmcat_collection.comments"].startswith("Full sphere")
    assert v["mmcat_collection.crystal_snapshot_1"].endswith("lyso-x7_1_1.snapshot.jpeg")
    assert v["mmcat_sample.barcode"] == "HA00AU3712"
    assert v["mmcat_sample.container_barcode"] == "ESRF-UP-0423"
    assert v["mmcat_sample.container_position"] == "3"
    assert v["mmcat_sample.changer_position"] == "5"


def test_minimal_collection_in_list_form(onto):
    p = ADAPTER.parse(MINIMAL)
    assert p.hints == {"dataset": "ref-thau3_2"}
    v, _ = values_of(p, onto)
    assert v == {
        "mmcat_collection.experiment_type": "Characterization",
        "mmcat_collection.oscillation_start": 90.0,
        "mmcat_collection.oscillation_width": 1.0,
        "mmcat_collection.oscillation_overlap": 0.0,
        "mmcat_collection.exposure_time": 0.1,
        "mmcat_collection.number_of_images": 1,
        "mmcat_collection.first_image_number": 1,
        "mmcat_collection.number_of_passes": 1,
        "mmcat_collection.directory": "/data/inhouse/opid30a1/20240221/RAW_DATA/thau",
        "mmcat_collection.image_prefix": "ref-thau3",
        "mmcat_collection.run_number": 2,
    }


def test_junk_values_are_left_out_with_a_note(tmp_path, onto):
    doc = json.loads(MINIMAL.read_text())[0]
    doc["oscillation_sequence"][0]["number_of_images"] = 12.5
    doc["oscillation_sequence"].append(dict(doc["oscillation_sequence"][0]))
    doc["wavelength"] = "n/a"
    doc["transmission"] = 250.0  # not a percentage any beamline reaches: dropped by validation
    doc["resolution"] = 1.9
    f = tmp_path / "dc.json"
    f.write_text(json.dumps(doc))
    p = ADAPTER.parse(f)
    v, _ = values_of(p, onto)
    assert "mmcat_collection.number_of_images" not in v and "diffrn_radiation_wavelength.wavelength" not in v
    assert "mmcat_collection.transmission" not in v
    assert v["mmcat_collection.resolution_edge"] == pytest.approx(1.9)
    assert any("whole number" in n for n in p.notes)
    assert any("wavelength = 'n/a'" in n for n in p.notes)
    assert any(n.startswith("dropped mmcat_collection.transmission") for n in p.notes)
    assert any("2 entries" in n for n in p.notes)


@pytest.mark.parametrize("f", [COMPLETE, MINIMAL])
def test_detects_fixtures(f):
    assert ADAPTER.detect(read_head(f), f.name)


@pytest.mark.parametrize("rel", ["ispyb_xml/edna2-maxiv-biomax_autoPROC-20230222_ispyb-results.json",
                                 "dials/dials_insulin_scaled.expt", "aimless/aimless-0.7.2_soleil_P41212_splTsm_2.xml",
                                 "crystfel/crystfel-0.9.1_lcls-cspad_xgandalf_test.stream"])
def test_does_not_claim_other_files(corpus_file, rel):
    f = corpus_file(rel)
    assert not ADAPTER.detect(read_head(f), f.name)


def test_does_not_claim_the_bundled_example():
    import mxcat

    example = Path(mxcat.__file__).parent / "examples" / "ispyb_results.json"
    assert not ADAPTER.detect(example.read_bytes()[:8192], example.name)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.text(max_size=30))
def test_detect_never_raises(head, name):
    assert ADAPTER.detect(head, name) in (True, False)


@pytest.mark.parametrize("rel", ["dials/dials_insulin_scaled.expt",
                                 "ispyb_xml/edna2-maxiv-biomax_autoPROC-20230222_ispyb-results.json",
                                 "ispyb_xml/edna-esrf-2011_autoproc_data.xml"])
def test_wrong_kind_is_a_parse_error(corpus_file, rel):
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(corpus_file(rel))
    assert e.value.adapter == "mxcube_dc"


@pytest.mark.parametrize("doc", ["[]", "[{}, {}]", '{"oscillation_sequence": {}}', '{"oscillation_sequence": [1]}',
                                 '{"oscillation_sequence": [{}], "fileinfo": []}', '"text"'])
def test_odd_structures_are_parse_errors(tmp_path, doc):
    f = tmp_path / "odd.json"
    f.write_text(doc)
    with pytest.raises(ParseError):
        ADAPTER.parse(f)


def test_truncated_file_names_file_and_line(tmp_path):
    cut = tmp_path / "cut.json"
    cut.write_bytes(COMPLETE.read_bytes()[:2500])
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(cut)
    assert e.value.path == str(cut) and e.value.line is not None and e.value.line > 30


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_mutations_parse_or_fail_cleanly(tmp_path, onto, seed):
    for src in (COMPLETE, MINIMAL):
        fuzz_adapter(ADAPTER, src.read_bytes(), tmp_path / "m.json", onto, seeds=[seed], n=12, nonempty=True)
