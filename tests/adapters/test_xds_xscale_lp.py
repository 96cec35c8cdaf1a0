"""XDS XSCALE.LP adapter: hand-checked values, one result per output data set, failed runs, fuzzing."""

from __future__ import annotations

import random

import pytest

from mxcat.adapters._util import read_head
from mxcat.adapters.xds_xscale_lp import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

SAD = "xds/XSCALE_xds-2014jan10_dls-i04-1_xia2-3daii.LP"
ABORTED = "xds/XSCALE_xds-2019mar15_error-cannot-open-input.LP"
OTHERS = [
    "xds/CORRECT_xds-2010dec06_edna-tryp1.LP",
    "xds/CORRECT_xds-2020jan31_esrf.LP",
    "xds/IDXREF_xds-2020jan31_esrf.LP",
    "xds/XDS_ASCII_header_xds-2020_esrf.HKL",
    "aimless/aimless-0.7.2_soleil_splTsm_2.SUMM.log",
    "aimless/pointless-1.9.31_esrf-id29.log",
    "ispyb_xml/autoproc-1.0.5-20210420_two-scaling-containers_anonymised.xml",
    "dials/dials_insulin_scaled.expt",
    "xia2/xia2-0.3.6.3_dls-i04-1_indexing-error_xia2.txt",
]


def test_sad_2014_hand_checked(corpus_file, onto):
    # FRIEDEL'S_LAW=FALSE: completeness/multiplicity are the anomalous items (see the module docstring).
    p = ADAPTER.parse(corpus_file(SAD))
    assert (p.program, p.version) == ("XDS XSCALE", "January 10, 2014 (BUILT=20140307)")
    assert [r.label for r in p.results] == ["SAD.HKL"]
    v, t = values_of(p, onto, "SAD.HKL")
    assert v["mmcat_processing.status"] == "success"
    # SPACE_GROUP_NUMBER=21 (C 2 2 2: XDS does not test screw axes; xia2 later chose C 2 2 21)
    assert v["symmetry.Int_Tables_number"] == 21
    assert v["symmetry.space_group_name_H-M"] == "C 2 2 2"
    assert [v[f"cell.{k}"] for k in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")] == \
        pytest.approx([83.50, 96.74, 57.97, 90, 90, 90])
    assert v["reflns.d_resolution_high"] == pytest.approx(2.04)
    assert v["reflns.d_resolution_low"] == pytest.approx(52.33)  # INCLUDE_RESOLUTION_RANGE
    assert v["reflns.pdbx_percent_possible_anomalous"] == pytest.approx(99.0)
    assert v["reflns.pdbx_redundancy_anomalous"] == pytest.approx(99053 / 28641, abs=1e-3)
    assert v["reflns.pdbx_CC_half"] == pytest.approx(0.998)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.073)
    assert v["reflns.mmcat_Rmeas_within_IplusIminus"] == pytest.approx(0.086)
    assert v["reflns.pdbx_netI_over_sigmaI"] == pytest.approx(10.33)
    assert v["reflns.pdbx_CC_half_anomalous"] == pytest.approx(0.13)
    assert v["reflns.pdbx_absDiff_over_sigma_anomalous"] == pytest.approx(0.891)
    assert v["reflns.pdbx_number_measured_all"] == 99053
    assert "reflns.number_obs" not in v and "reflns.percent_possible_obs" not in v
    assert v["reflns.mmcat_ISa"] == pytest.approx(19.49)
    assert v["reflns.B_iso_Wilson_estimate"] == pytest.approx(38.103)
    assert v["mmcat_processing.anomalous"] == "yes"
    assert v["reflns_shell.inner.d_res_high"] == pytest.approx(9.12)
    assert v["reflns_shell.inner.pdbx_CC_half"] == pytest.approx(0.999)
    assert v["reflns_shell.inner.pdbx_percent_possible_anomalous"] == pytest.approx(97.9)
    assert v["reflns_shell.outer.d_res_high"] == pytest.approx(2.04)
    assert v["reflns_shell.outer.d_res_low"] == pytest.approx(2.09)
    assert v["reflns_shell.outer.pdbx_CC_half"] == pytest.approx(0.787)
    assert v["reflns_shell.outer.pdbx_percent_possible_anomalous"] == pytest.approx(99.4)
    assert v["reflns_shell.outer.pdbx_redundancy_anomalous"] == pytest.approx(7648 / 2139, abs=1e-3)
    assert v["reflns_shell.outer.mmcat_Rmeas_within_IplusIminus"] == pytest.approx(0.682)
    rows = t["reflns_shell"].rows
    assert len(rows) == 20


def test_aborted_2019(corpus_file, onto):
    p = ADAPTER.parse(corpus_file(ABORTED))
    assert (p.program, p.version) == ("XDS XSCALE", "Mar 15, 2019 (BUILT=20191211)")
    assert [r.label for r in p.results] == ["XSCALE.HKL"]
    v, t = values_of(p, onto)
    assert v == {"mmcat_processing.status": "failed", "mmcat_processing.message": "CANNOT OPEN OR READ ../",
                 "mmcat_processing.message_severity": "ERROR"}
    assert t == {}


def _two_outputs(text: str) -> str:
    """The SAD run with a second output NATIVE.HKL (FRIEDEL'S_LAW=TRUE) from its own input."""
    start = text.index("  STATISTICS OF SCALED OUTPUT DATA SET : SAD.HKL")
    end = text.index(" cpu time used by XSCALE")
    section = text[start:end].replace("SAD.HKL", "NATIVE.HKL").replace("FRIEDEL'S_LAW=FALSE", "FRIEDEL'S_LAW=TRUE")
    text = text[:end] + section + text[end:]
    text = text.replace(" CORRECTIONS= DECAY MODULATION ABSORPTION\n",
                        " CORRECTIONS= DECAY MODULATION ABSORPTION\n OUTPUT_FILE=NATIVE.HKL\n INPUT_FILE=NAT_SWEEP1.HKL XDS_ASCII\n", 1)
    isa = " 9.777E-01  2.692E-03   19.49   21.65 SAD_SWEEP1.HKL"
    return text.replace(isa, isa.rstrip() + "\n 1.000E+00  1.000E-03   31.62   31.62 NAT_SWEEP1.HKL", 1)


def test_one_result_per_output_data_set(corpus_file, tmp_path, onto):
    f = tmp_path / "XSCALE.LP"
    f.write_text(_two_outputs(corpus_file(SAD).read_text()))
    p = ADAPTER.parse(f)
    assert [r.label for r in p.results] == ["SAD.HKL", "NATIVE.HKL"]
    sad, _ = values_of(p, onto, "SAD.HKL")
    nat, _ = values_of(p, onto, "NATIVE.HKL")
    assert sad["reflns.mmcat_ISa"] == pytest.approx(19.49)
    assert nat["reflns.mmcat_ISa"] == pytest.approx(31.62)
    assert nat["mmcat_processing.anomalous"] == "no"
    assert nat["reflns.percent_possible_obs"] == pytest.approx(99.0)
    assert nat["reflns.number_obs"] == 28641
    assert nat["reflns.pdbx_Rrim_I_all"] == pytest.approx(0.086)
    assert "reflns.pdbx_percent_possible_anomalous" not in nat


def test_detect(corpus_file):
    for rel in (SAD, ABORTED):
        p = corpus_file(rel)
        assert ADAPTER.detect(read_head(p), p.name)
    for rel in OTHERS:
        p = corpus_file(rel)
        assert not ADAPTER.detect(read_head(p), p.name), rel


def test_detect_never_raises():
    rng = random.Random(11)
    for h in [b"", b"\x00", b" ***** XSCALE"] + [rng.randbytes(rng.randrange(0, 3000)) for _ in range(200)]:
        assert ADAPTER.detect(h, "XSCALE.LP") in (True, False)
    assert not ADAPTER.detect(None, "x")  # type: ignore[arg-type]


def test_wrong_kind(corpus_file):
    for rel in OTHERS:
        with pytest.raises(ParseError) as e:
            ADAPTER.parse(corpus_file(rel))
        assert e.value.adapter == "xds_xscale_lp"


def test_truncated(corpus_file, tmp_path):
    lines = corpus_file(SAD).read_bytes().splitlines(keepends=True)
    f = tmp_path / "XSCALE.LP"
    at = next(i for i, ln in enumerate(lines) if b"SUBSET OF INTENSITY DATA" in ln)
    for n in (40, at - 2, at + 10, len(lines) - 3):
        f.write_bytes(b"".join(lines[:n]))
        with pytest.raises(ParseError) as e:
            ADAPTER.parse(f)
        assert e.value.path == str(f) and e.value.line is not None


@pytest.mark.parametrize("rel", [SAD, ABORTED])
def test_fuzz(corpus_file, tmp_path, onto, rel):
    data = corpus_file(rel).read_bytes()
    fuzz_adapter(ADAPTER, data, tmp_path / "XSCALE.LP", onto, seeds=range(8))
