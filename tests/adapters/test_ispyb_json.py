"""EDNA2 ISPyB store payload (JSON): hand-checked values, detection, damaged and wrong-kind input."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxcat.adapters._util import read_head
from mxcat.adapters.ispyb_json import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

BIOMAX = "ispyb_xml/edna2-maxiv-biomax_autoPROC-20230222_ispyb-results.json"


def test_biomax_payload(corpus_file, onto):
    p = ADAPTER.parse(corpus_file(BIOMAX))
    assert not [n for n in p.notes if n.startswith("dropped")], p.notes
    assert [r.label for r in p.results] == ["staraniso"]
    assert p.program == "autoPROC_test"
    assert any("read as percentages: EDNA2" in n for n in p.notes)
    assert any("ap_thau1-t11_run5_staraniso_alldata-unique.mtz" in n for n in p.notes)
    v, _ = values_of(p, onto)
    assert v["reflns.d_resolution_high"] == pytest.approx(1.475)
    assert v["reflns.d_resolution_low"] == pytest.approx(54.072)
    assert v["reflns.percent_possible_obs"] == pytest.approx(85.5)
    assert v["reflns.pdbx_percent_possible_ellipsoidal"] == pytest.approx(85.5)
    assert v["reflns.pdbx_percent_possible_spherical"] == pytest.approx(75.3)
    assert v["reflns.pdbx_percent_possible_ellipsoidal_anomalous"] == pytest.approx(83.4)
    assert v["reflns.pdbx_CC_half"] == pytest.approx(0.999)
    assert v["reflns.pdbx_redundancy"] == pytest.approx(10.1)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.053)  # 5.3 %
    assert v["reflns.mmcat_Rpim_within_IplusIminus"] == pytest.approx(0.022)  # 2.1999999999999997 %
    assert v["reflns.pdbx_absDiff_over_sigma_anomalous"] == pytest.approx(0.539)  # sigAno
    assert v["reflns.pdbx_CC_half_anomalous"] == pytest.approx(-0.23)  # ccAno
    assert v["reflns.number_obs"] == 33258
    assert v["reflns_shell.inner.d_res_high"] == pytest.approx(4.583)
    assert v["reflns_shell.inner.Rmerge_I_obs"] == pytest.approx(0.035)
    assert v["reflns_shell.outer.d_res_low"] == pytest.approx(1.576)
    assert v["reflns_shell.outer.Rmerge_I_obs"] == pytest.approx(0.489)
    assert v["reflns_shell.outer.pdbx_Rrim_I_all"] == pytest.approx(0.582)
    assert v["reflns_shell.outer.pdbx_CC_half"] == pytest.approx(0.709)
    assert v["reflns_shell.outer.percent_possible_obs"] == pytest.approx(44.0)
    assert v["symmetry.space_group_name_H-M"] == "P 41 21 2"
    assert v["space_group.IT_number"] == 92
    assert v["space_group.crystal_system"] == "tetragonal"
    assert [v["cell.length_a"], v["cell.length_b"], v["cell.length_c"], v["cell.angle_beta"]] == \
        pytest.approx([57.944, 57.944, 150.438, 90.0])
    assert [v[f"reflns.pdbx_aniso_diffraction_limit_{n}"] for n in (1, 2, 3)] == pytest.approx([1.609, 1.609, 1.429])
    assert v["mmcat_integration.aniso_principal_axis_3"] == "0 0 1"
    assert v["mmcat_integration.end_image_number"] == 1800
    assert v["mmcat_integration.refined_detector_distance"] == pytest.approx(285.830353)
    assert v["mmcat_integration.refined_beam_centre_x"] == pytest.approx(157.063)  # refinedXbeam
    assert v["mmcat_integration.rotation_axis_y"] == pytest.approx(1.0)
    assert v["mmcat_collection.ispyb_datacollection_id"] == 92677
    assert v["mmcat_processing.status"] == "success"
    assert v["mmcat_processing.start_time"] == "2023-06-01T16:53:28"


def test_isotropic_payload_and_list_integration(tmp_path, onto):
    doc = {"autoProcProgram": {"processingPrograms": "XIA2_DIALS", "processingStatus": "FAILED"},
           "autoProc": {"spaceGroup": "C 1 2 1", "refinedCellA": "90.1"},
           "autoProcScalingStatistics": [{"scalingStatisticsType": "overall", "rmerge": 6.1, "ccHalf": 0.99},
                                         {"scalingStatisticsType": "innerShell", "rmerge": 2.5}],
           "autoProcIntegration": [{"startImageNumber": 1, "endImageNumber": 900}],
           "autoProcProgramAttachment": [{"fileType": "Log", "fileName": "xia2.txt", "filePath": "/p"}]}
    f = tmp_path / "x.json"
    f.write_text(json.dumps(doc))
    p = ADAPTER.parse(f)
    assert [r.label for r in p.results] == ["isotropic"]
    v, _ = values_of(p, onto)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.061)
    assert v["mmcat_processing.status"] == "failed"
    assert v["space_group.IT_number"] == 5
    assert v["mmcat_integration.end_image_number"] == 900
    assert any("Log /p/xia2.txt" in n for n in p.notes)


def test_detects_the_payload(corpus_file):
    f = corpus_file(BIOMAX)
    assert ADAPTER.detect(read_head(f), f.name)


@pytest.mark.parametrize("rel", ["dials/dials_insulin_scaled.expt", "aimless/aimless-0.7.2_soleil_P41212_splTsm_2.xml",
                                 "ispyb_xml/autoproc-1.1.7-20240123_esrf_2024.xml",
                                 "crystfel/crystfel-0.9.1_lcls-cspad_xgandalf_test.stream"])
def test_does_not_claim_other_files(corpus_file, rel):
    f = corpus_file(rel)
    assert not ADAPTER.detect(read_head(f), f.name)


def test_does_not_claim_other_json(tmp_path):
    from pathlib import Path

    import mxcat

    example = Path(mxcat.__file__).parent / "examples" / "ispyb_results.json"
    assert not ADAPTER.detect(example.read_bytes()[:8192], example.name)
    assert not ADAPTER.detect(b'{"oscillation_sequence": [], "fileinfo": {}}', "dc.json")
    assert not ADAPTER.detect(b'{"a": 1}', "x.json")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.text(max_size=30))
def test_detect_never_raises(head, name):
    assert ADAPTER.detect(head, name) in (True, False)


@pytest.mark.parametrize("rel", ["dials/dials_insulin_scaled.expt", "ispyb_xml/edna-esrf-2011_autoproc_data.xml"])
def test_wrong_kind_is_a_parse_error(corpus_file, rel):
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(corpus_file(rel))
    assert e.value.adapter == "edna2_ispyb_json"


@pytest.mark.parametrize("doc", ['[1, 2]', '{"autoProc": [1]}', '{"autoProcScalingStatistics": "x"}',
                                 '{"autoProcProgram": {}}'])
def test_odd_structures_are_parse_errors(tmp_path, doc):
    f = tmp_path / "odd.json"
    f.write_text(doc)
    with pytest.raises(ParseError):
        ADAPTER.parse(f)


def test_truncated_file_names_file_and_line(corpus_file, tmp_path):
    data = corpus_file(BIOMAX).read_bytes()
    cut = tmp_path / "cut.json"
    cut.write_bytes(data[:3000])
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(cut)
    assert e.value.path == str(cut) and e.value.line is not None and e.value.line > 50


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_mutations_parse_or_fail_cleanly(corpus_file, tmp_path, onto, seed):
    fuzz_adapter(ADAPTER, corpus_file(BIOMAX).read_bytes(), tmp_path / "m.json", onto, seeds=[seed], n=12)
