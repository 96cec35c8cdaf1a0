"""XDS CORRECT.LP adapter: hand-checked values of the corpus files, detection, failed runs, fuzzing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mxcat.adapters._util import read_head
from mxcat.adapters.xds_correct_lp import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

TRYP = "xds/CORRECT_xds-2010dec06_edna-tryp1.LP"
ESRF = "xds/CORRECT_xds-2020jan31_esrf.LP"
OTHERS = [
    "xds/IDXREF_xds-2020jan31_esrf.LP",
    "xds/XSCALE_xds-2014jan10_dls-i04-1_xia2-3daii.LP",
    "xds/XSCALE_xds-2019mar15_error-cannot-open-input.LP",
    "xds/XDS_ASCII_header_edna-tryp1.HKL",
    "aimless/aimless-0.7.2_soleil_P41212_splTsm_2.xml",
    "aimless/pointless-1.9.31_esrf-id29.log",
    "ispyb_xml/autoproc-1.1.7-20240123_esrf_2024.xml",
    "dials/dials_insulin_scaled.expt",
    "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat",
]


def test_name_and_protocol():
    from mxcat.adapters import Adapter

    assert ADAPTER.name == "xds_correct_lp"
    assert isinstance(ADAPTER, Adapter)


def test_tryp1_2010_hand_checked(corpus_file, onto):
    # Checked by eye against the file: banner line 2, refinement block lines 259-282, ISa line 397,
    # standard-error table line 422 (47.080 A), final table lines 1152-1165, Wilson line.
    p = ADAPTER.parse(corpus_file(TRYP))
    assert (p.program, p.version) == ("XDS CORRECT", "December 6, 2010")
    assert p.hints == {"dataset": "tryp1_2"}
    v, t = values_of(p, onto)
    assert v["mmcat_processing.status"] == "success"
    assert v["symmetry.Int_Tables_number"] == 152
    assert v["symmetry.space_group_name_H-M"] == "P 31 2 1"
    assert [v[f"cell.{k}"] for k in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")] == \
        pytest.approx([54.364, 54.364, 107.442, 90.0, 90.0, 120.0])
    assert v["reflns.d_resolution_high"] == pytest.approx(1.42)
    assert v["reflns.d_resolution_low"] == pytest.approx(47.08)
    assert v["reflns.percent_possible_obs"] == pytest.approx(79.6)
    assert v["reflns.pdbx_number_measured_all"] == 144614
    assert v["reflns.number_obs"] == 28484
    assert v["reflns.pdbx_redundancy"] == pytest.approx(144614 / 28484, abs=1e-3)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.040)
    assert v["reflns.pdbx_Rrim_I_all"] == pytest.approx(0.043)
    assert v["reflns.pdbx_netI_over_sigmaI"] == pytest.approx(23.07)
    assert v["reflns.pdbx_CC_half_anomalous"] == pytest.approx(-0.05)
    assert v["reflns.pdbx_absDiff_over_sigma_anomalous"] == pytest.approx(0.739)
    assert "reflns.pdbx_CC_half" not in v  # this XDS version prints Rmrgd-F, not CC(1/2)
    assert v["reflns.mmcat_ISa"] == pytest.approx(22.77)
    assert v["reflns.B_iso_Wilson_estimate"] == pytest.approx(22.334)
    assert v["reflns_shell.inner.d_res_high"] == pytest.approx(4.23)
    assert v["reflns_shell.inner.d_res_low"] == pytest.approx(47.08)
    assert v["reflns_shell.inner.percent_possible_obs"] == pytest.approx(99.7)
    assert v["reflns_shell.inner.Rmerge_I_obs"] == pytest.approx(0.031)
    assert v["reflns_shell.outer.d_res_high"] == pytest.approx(1.42)
    assert v["reflns_shell.outer.d_res_low"] == pytest.approx(1.50)
    assert v["reflns_shell.outer.percent_possible_obs"] == pytest.approx(25.2)
    assert v["reflns_shell.outer.pdbx_redundancy"] == pytest.approx(2152 / 1430, abs=1e-3)
    assert v["reflns_shell.outer.pdbx_CC_half_anomalous"] == pytest.approx(-0.48)
    assert v["reflns_shell.outer.pdbx_netI_over_sigmaI_obs"] == pytest.approx(2.36)
    assert v["mmcat_processing.anomalous"] == "no"
    # refined geometry: direct beam 1226.30, 1255.30 px x 0.172 mm
    assert v["mmcat_integration.refined_detector_distance"] == pytest.approx(357.05)
    assert v["mmcat_integration.refined_beam_centre_x"] == pytest.approx(1226.30 * 0.172)
    assert v["mmcat_integration.refined_beam_centre_y"] == pytest.approx(1255.30 * 0.172)
    assert v["exptl_crystal.pdbx_mosaicity"] == pytest.approx(0.175)
    assert v["mmcat_integration.rotation_axis_z"] == pytest.approx(0.004975)
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.97627)
    assert (v["mmcat_integration.start_image_number"], v["mmcat_integration.end_image_number"]) == (1, 120)
    assert v["mmcat_collection.oscillation_width"] == pytest.approx(1.0)
    shells = t["reflns_shell"]
    assert len(shells.rows) == 9
    col = {c: i for i, c in enumerate(shells.columns)}
    assert [r[col["d_res_high"]] for r in shells.rows] == pytest.approx([4.23, 3.00, 2.45, 2.12, 1.90, 1.73, 1.60, 1.50, 1.42])
    assert [r[col["mmcat_shell_class"]] for r in shells.rows] == ["inner"] + ["intermediate"] * 7 + ["outer"]
    assert shells.rows[3][col["percent_possible_obs"]] == pytest.approx(99.9)
    assert shells.rows[3][col["d_res_low"]] == pytest.approx(2.45)


def test_esrf_2020_hand_checked(corpus_file, onto):
    # One image (DATA_RANGE 1 1): no reflections compared, so no R factors, CC(1/2), I/sigma or ISa.
    p = ADAPTER.parse(corpus_file(ESRF))
    assert (p.program, p.version) == ("XDS CORRECT", "Jan 31, 2020 (BUILT=20200131)")
    v, t = values_of(p, onto)
    assert v["symmetry.Int_Tables_number"] == 1
    assert v["symmetry.space_group_name_H-M"] == "P 1"
    assert [v[f"cell.{k}"] for k in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")] == \
        pytest.approx([92.58, 92.64, 128.53, 90.001, 90.011, 120.020])
    assert v["reflns.d_resolution_high"] == pytest.approx(1.50)
    assert v["reflns.d_resolution_low"] == pytest.approx(12.782)
    assert v["reflns.percent_possible_obs"] == pytest.approx(0.1)
    assert v["reflns.pdbx_redundancy"] == pytest.approx(1.0)
    assert v["reflns.number_obs"] == 572
    assert v["reflns_shell.inner.d_res_high"] == pytest.approx(4.27)
    assert v["reflns_shell.outer.d_res_high"] == pytest.approx(1.50)
    assert v["reflns_shell.outer.d_res_low"] == pytest.approx(1.59)
    for absent in ("reflns.pdbx_Rmerge_I_obs", "reflns.pdbx_Rrim_I_all", "reflns.pdbx_CC_half", "reflns.pdbx_netI_over_sigmaI",
                   "reflns.mmcat_ISa", "mmcat_integration.refined_detector_distance"):
        assert absent not in v
    assert any("ISa" in n for n in p.notes)
    assert v["reflns.B_iso_Wilson_estimate"] == pytest.approx(20.332)
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.965)
    assert len(t["reflns_shell"].rows) == 9


def test_detect(corpus_file):
    for rel in (TRYP, ESRF):
        p = corpus_file(rel)
        assert ADAPTER.detect(read_head(p), p.name)
    for rel in OTHERS:
        p = corpus_file(rel)
        assert not ADAPTER.detect(read_head(p), p.name), rel


def test_detect_never_raises():
    rng = random.Random(7)
    heads = [b"", b"\x00" * 64, b" ***** CORRECT", b"\xff\xfe" * 100, "é ***** CORRECT *****".encode()]
    heads += [rng.randbytes(rng.randrange(0, 4096)) for _ in range(200)]
    for h in heads:
        assert ADAPTER.detect(h, "CORRECT.LP") in (True, False)
    assert not ADAPTER.detect(None, "x")  # type: ignore[arg-type]


def test_wrong_kind(corpus_file):
    for rel in OTHERS:
        with pytest.raises(ParseError) as e:
            ADAPTER.parse(corpus_file(rel))
        assert e.value.adapter == "xds_correct_lp"


def test_truncated_names_file_and_line(corpus_file, tmp_path):
    lines = corpus_file(TRYP).read_bytes().splitlines(keepends=True)
    cut = tmp_path / "CORRECT.LP"
    for n, what in ((1158, "total"), (1100, "STATISTICS table"), (1170, "wall-clock"), (300, "SAVED DATA SET")):
        cut.write_bytes(b"".join(lines[:n]))
        with pytest.raises(ParseError) as e:
            ADAPTER.parse(cut)
        assert e.value.path == str(cut)
        assert e.value.line is not None, what
    cut.write_bytes(b"")
    with pytest.raises(ParseError):
        ADAPTER.parse(cut)
    with pytest.raises(ParseError):
        ADAPTER.parse(tmp_path / "missing.LP")


def test_aborted_run_is_a_failed_result(corpus_file, tmp_path, onto):
    head = corpus_file(ESRF).read_text().splitlines(keepends=True)[:60]
    f = tmp_path / "CORRECT.LP"
    f.write_text("".join(head) + "\n !!! ERROR !!! INSUFFICIENT NUMBER OF ACCEPTED REFLECTIONS\n AUTOMATIC DATA PROCESSING STOPPED.\n")
    p = ADAPTER.parse(f)
    v, _ = values_of(p, onto)
    assert v["mmcat_processing.status"] == "failed"
    assert v["mmcat_processing.message"] == "INSUFFICIENT NUMBER OF ACCEPTED REFLECTIONS"
    assert v["mmcat_processing.message_severity"] == "ERROR"
    assert "reflns.d_resolution_high" not in v
    assert any("AUTOMATIC DATA PROCESSING STOPPED" in n for n in p.notes)


def test_friedel_false_uses_anomalous_items(corpus_file, tmp_path, onto):
    text = corpus_file(TRYP).read_text().replace("MERGE=FALSE          FRIEDEL'S_LAW=TRUE", "MERGE=FALSE          FRIEDEL'S_LAW=FALSE")
    f = tmp_path / "CORRECT.LP"
    f.write_text(text)
    v, _ = values_of(ADAPTER.parse(f), onto)
    assert v["mmcat_processing.anomalous"] == "yes"
    assert v["reflns.pdbx_percent_possible_anomalous"] == pytest.approx(79.6)
    assert v["reflns.mmcat_Rmeas_within_IplusIminus"] == pytest.approx(0.043)
    assert "reflns.percent_possible_obs" not in v and "reflns.number_obs" not in v and "reflns.pdbx_Rrim_I_all" not in v


@pytest.mark.parametrize("rel", [TRYP, ESRF])
def test_fuzz(corpus_file, tmp_path, onto, rel):
    data = corpus_file(rel).read_bytes()
    fuzz_adapter(ADAPTER, data, tmp_path / "CORRECT.LP", onto, seeds=range(6))


def test_random_bytes_are_parse_errors(tmp_path):
    rng = random.Random(3)
    f = tmp_path / "CORRECT.LP"
    for _ in range(20):
        f.write_bytes(rng.randbytes(rng.randrange(1, 5000)))
        with pytest.raises(ParseError):
            ADAPTER.parse(f)
    f.write_bytes(b" ***** CORRECT ***** (VERSION Jan 31, 2020)\n" + bytes(range(256)) * 4)
    with pytest.raises(ParseError):
        ADAPTER.parse(f)


def test_out_of_range_value_is_dropped_with_a_note(corpus_file, tmp_path, onto):
    text = corpus_file(TRYP).read_text()
    old = "    total      144614   28484     35802       79.6%"
    assert old in text
    f = tmp_path / "CORRECT.LP"
    f.write_text(text.replace(old, "    total      144614   28484     35802      179.6%"))
    p = ADAPTER.parse(f)
    v, _ = values_of(p, onto)
    assert "reflns.percent_possible_obs" not in v
    assert any("percent_possible_obs" in n and "179.6" in n for n in p.notes)


def test_is_claimed_by_this_adapter_only(corpus_file):
    from mxcat.adapters import explain

    for rel in (TRYP, ESRF):
        claims = [x.adapter for x in explain(Path(corpus_file(rel))) if x.claims]
        assert "xds_correct_lp" in claims
