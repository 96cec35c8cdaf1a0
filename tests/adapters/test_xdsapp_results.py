"""XDSAPP results text: hand-checked values, Friedel's law and R_meas, detection, fuzzing, damaged files."""

from __future__ import annotations

import random

import pytest

from mxcat.adapters.xdsapp_results import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

REAL = "xdsapp/xdsapp_results_maxiv-fragmax_C2.txt"
OTHERS = [
    "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat",
    "xia2/xia2-0.3.6.3_dls-i04-1_indexing-error_xia2.txt",
    "xds/CORRECT_xds-2020jan31_esrf.LP",
    "xds/IDXREF_xds-2020jan31_esrf.LP",
    "aimless/aimless-0.7.2_soleil_splTsm_2.SUMM.log",
    "dials/dials_insulin_scaled.expt",
    "live_analysis/dozor-2.0.2_esrf.log",
    "crystfel/eiger16m-binning2-nativefiles.geom",
]


def test_corpus_values(corpus_file, onto):
    parsed = ADAPTER.parse(corpus_file(REAL))
    assert parsed.program == "XDSAPP" and len(parsed.results) == 1
    assert parsed.hints == {"dataset": "ARwoDMSO-F2XEntry-A07a_1"}
    v, _ = values_of(parsed, onto)
    assert (v["reflns.d_resolution_low"], v["reflns.d_resolution_high"]) == (44.63, 1.69)
    assert (v["reflns_shell.outer.d_res_low"], v["reflns_shell.outer.d_res_high"]) == (1.79, 1.69)
    assert (v["reflns.pdbx_number_measured_all"], v["reflns.number_obs"]) == (489902, 71323)
    assert v["reflns.pdbx_redundancy"] == 6.87
    assert (v["reflns.pdbx_netI_over_sigmaI"], v["reflns_shell.outer.pdbx_netI_over_sigmaI_obs"]) == (16.42, 0.52)
    assert (v["reflns.percent_possible_obs"], v["reflns_shell.outer.percent_possible_obs"]) == (99.8, 99.3)
    # R_meas and CC(1/2) are printed in percent; Friedel's law TRUE: Friedel mates merged
    assert v["reflns.pdbx_Rrim_I_all"] == pytest.approx(0.051)
    assert v["reflns_shell.outer.pdbx_Rrim_I_all"] == pytest.approx(4.027)
    assert v["reflns.pdbx_CC_half"] == pytest.approx(1.0)
    assert v["reflns_shell.outer.pdbx_CC_half"] == pytest.approx(0.235)
    assert v["reflns.B_iso_Wilson_estimate"] == 47.82
    assert v["exptl_crystal.pdbx_mosaicity"] == 0.097
    assert v["reflns.mmcat_ISa"] == 29.9
    assert v["mmcat_processing.anomalous"] == "no"
    assert (v["symmetry.space_group_name_H-M"], v["symmetry.Int_Tables_number"]) == ("C 1 2 1", 5)
    assert [v[f"cell.{k}"] for k in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")] == \
        [88.68, 82.26, 93.7, 90.0, 108.65, 90.0]
    assert (v["mmcat_integration.start_image_number"], v["mmcat_integration.end_image_number"]) == (1, 3600)
    assert v["mmcat_collection.oscillation_width"] == 0.1
    assert v["diffrn_radiation_wavelength.wavelength"] == 0.9184
    assert (v["mmcat_integration.refined_detector_distance"], v["mmcat_collection.detector_distance"]) == (158.96, 158.97)
    assert v["mmcat_processing.message"] == "Indexing (High no. of spots in subtree 2)"
    assert v["mmcat_processing.message_severity"] == "WARNING"
    assert v["mmcat_processing.end_time"] == "2020-07-03T10:37:23"
    assert v["mmcat_collection.directory"] == "/data/fragmaxrpc/user/frag200001/raw/ARwoDMSO/ARwoDMSO-F2XEntry-A07a"


def test_friedel_false_gives_rmeas_within_i_plus_minus(corpus_file, tmp_path, onto):
    text = corpus_file(REAL).read_text().replace("Friedels law                           TRUE",
                                                 "Friedels law                           FALSE")
    p = tmp_path / "results.txt"
    p.write_text(text)
    v, _ = values_of(ADAPTER.parse(p), onto)
    assert v["mmcat_processing.anomalous"] == "yes"
    assert "reflns.pdbx_Rrim_I_all" not in v
    assert v["reflns.mmcat_Rmeas_within_IplusIminus"] == pytest.approx(0.051)


def test_detect(corpus_file):
    p = corpus_file(REAL)
    assert ADAPTER.detect(p.read_bytes()[:8192], p.name)
    for rel in OTHERS:
        q = corpus_file(rel)
        assert not ADAPTER.detect(q.read_bytes()[:8192], q.name), rel


def test_detect_never_raises():
    rng = random.Random(3)
    for _ in range(300):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
        assert ADAPTER.detect(blob, "results.txt") is False


@pytest.mark.parametrize("seed", range(8))
def test_fuzz(corpus_file, onto, tmp_path, seed):
    data = corpus_file(REAL).read_bytes()
    fuzz_adapter(ADAPTER, data, tmp_path / "results.txt", onto, seeds=[seed], nonempty=True)


def test_wrong_kind(corpus_file):
    for rel in OTHERS[:5]:
        with pytest.raises(ParseError):
            ADAPTER.parse(corpus_file(rel))


def test_truncated(corpus_file, tmp_path):
    data = corpus_file(REAL).read_bytes()
    p = tmp_path / "results.txt"
    for cut in (len(data) // 3, data.index(b"Experimental settings"), data.index(b"Friedels law") + 20):
        p.write_bytes(data[:cut])
        with pytest.raises(ParseError) as exc:
            ADAPTER.parse(p)
        assert exc.value.path == str(p) and exc.value.line is not None


def test_damaged_values(corpus_file, tmp_path):
    text = corpus_file(REAL).read_text()
    p = tmp_path / "results.txt"
    p.write_text(text.replace("99.8 (99.3)", "99.8 (199.3)"))
    with pytest.raises(ParseError, match="Completeness.*outside") as exc:
        ADAPTER.parse(p)
    assert exc.value.line == 27
    p.write_text(text.replace("44.63-1.69 (1.79-1.69)", "44.63-1.69 (1.79-"))
    with pytest.raises(ParseError, match="resolution range"):
        ADAPTER.parse(p)
