"""AIMLESS XMLOUT adapter: values hand-checked against the SUMM.log of the same run, shells, detection, fuzzing."""

from __future__ import annotations

import random

import pytest

from mxcat.adapters._util import read_head
from mxcat.adapters.aimless_xml import ADAPTER, shell_edges
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

XML = "aimless/aimless-0.7.2_soleil_P41212_splTsm_2.xml"
OTHERS = [
    "aimless/aimless-0.7.2_soleil_splTsm_2.SUMM.log",
    "aimless/pointless-1.9.31_esrf-id29.log",
    "ispyb_xml/autoproc-1.1.7-20240123_esrf_2024.xml",
    "ispyb_xml/edna-esrf-2011_autoproc_data.xml",  # no XML declaration either
    "ispyb_xml/edna2-maxiv-biomax_autoPROC-20230222_ispyb-results.json",
    "dials/dials_insulin_scaled.expt",
    "xds/CORRECT_xds-2020jan31_esrf.LP",
    "xds/XSCALE_xds-2014jan10_dls-i04-1_xia2-3daii.LP",
]


def test_soleil_hand_checked_against_summ_log(corpus_file, onto):
    p = ADAPTER.parse(corpus_file(XML))
    assert (p.program, p.version) == ("AIMLESS", "0.7.2")
    assert [r.label for r in p.results] == [None]
    v, t = values_of(p, onto)
    # aimless-0.7.2_soleil_splTsm_2.SUMM.log: Overall / InnerShell / OuterShell
    expected = {
        "reflns.d_resolution_low": 49.35, "reflns_shell.inner.d_res_low": 49.35, "reflns_shell.outer.d_res_low": 4.70,
        "reflns.d_resolution_high": 4.58, "reflns_shell.inner.d_res_high": 20.49, "reflns_shell.outer.d_res_high": 4.58,
        "reflns.pdbx_Rmerge_I_obs": 0.258, "reflns_shell.inner.Rmerge_I_obs": 0.074, "reflns_shell.outer.Rmerge_I_obs": 1.563,
        "reflns.mmcat_Rmeas_within_IplusIminus": 0.271, "reflns_shell.outer.mmcat_Rmeas_within_IplusIminus": 1.686,
        "reflns.pdbx_Rrim_I_all": 0.276, "reflns_shell.inner.pdbx_Rrim_I_all": 0.083, "reflns_shell.outer.pdbx_Rrim_I_all": 1.673,
        "reflns.mmcat_Rpim_within_IplusIminus": 0.126, "reflns_shell.inner.mmcat_Rpim_within_IplusIminus": 0.033,
        "reflns.pdbx_Rpim_I_all": 0.096, "reflns_shell.inner.pdbx_Rpim_I_all": 0.036, "reflns_shell.outer.pdbx_Rpim_I_all": 0.585,
        "reflns.pdbx_number_measured_all": 59454, "reflns_shell.inner.number_measured_all": 448,
        "reflns_shell.outer.number_measured_all": 3744,
        "reflns.number_obs": 7352, "reflns_shell.inner.number_unique_obs": 104, "reflns_shell.outer.number_unique_obs": 490,
        "reflns.pdbx_netI_over_sigmaI": 5.8, "reflns_shell.inner.pdbx_netI_over_sigmaI_obs": 12.1,
        "reflns_shell.outer.pdbx_netI_over_sigmaI_obs": 1.3,
        "reflns.pdbx_CC_half": 0.993, "reflns_shell.inner.pdbx_CC_half": 0.996, "reflns_shell.outer.pdbx_CC_half": 0.457,
        "reflns.percent_possible_obs": 99.2, "reflns_shell.inner.percent_possible_obs": 92.9,
        "reflns_shell.outer.percent_possible_obs": 90.5,
        "reflns.pdbx_redundancy": 8.1, "reflns_shell.inner.pdbx_redundancy": 4.3, "reflns_shell.outer.pdbx_redundancy": 7.6,
        "reflns.pdbx_chi_squared": 0.96,
        "reflns.pdbx_percent_possible_anomalous": 98.8, "reflns_shell.inner.pdbx_percent_possible_anomalous": 86.1,
        "reflns_shell.outer.pdbx_percent_possible_anomalous": 86.2,
        "reflns.pdbx_redundancy_anomalous": 4.4, "reflns_shell.inner.pdbx_redundancy_anomalous": 3.0,
        "reflns_shell.outer.pdbx_redundancy_anomalous": 4.2,
        "reflns.pdbx_CC_half_anomalous": 0.242, "reflns_shell.inner.pdbx_CC_half_anomalous": 0.945,
        "reflns_shell.outer.pdbx_CC_half_anomalous": -0.008,
        "reflns.pdbx_res_netI_over_sigmaI_2": 5.36,  # "from Mn(I/sd) > 2.00: limit = 5.36A"
        "exptl_crystal.pdbx_mosaicity": 0.16,
        "cell.length_a": 103.453, "cell.length_b": 103.453, "cell.length_c": 224.593,
        "cell.angle_alpha": 90.0, "cell.angle_beta": 90.0, "cell.angle_gamma": 90.0,
        "diffrn_radiation_wavelength.wavelength": 0.91942,
    }
    for k, x in expected.items():
        assert v[k] == pytest.approx(x), k
    assert v["symmetry.space_group_name_H-M"] == "P 41 2 2"
    assert v["symmetry.Int_Tables_number"] == 91
    assert v["mmcat_processing.status"] == "success"
    notes = "\n".join(p.notes)
    assert "Rmerge within I+/I- (Overall 0.239 Inner 0.057 Outer 1.480): no mmCAT item" in notes
    assert "ONLYMERGE" in notes


def test_shell_table(corpus_file, onto):
    _, t = values_of(ADAPTER.parse(corpus_file(XML)), onto)
    shells = t["reflns_shell"]
    col = {c: i for i, c in enumerate(shells.columns)}
    rows = shells.rows
    assert len(rows) == 20
    first, last = rows[0], rows[-1]
    # bin 1 and bin 20 equal the Inner and Outer columns of the summary
    assert (first[col["d_res_low"]], first[col["d_res_high"]]) == pytest.approx((49.35, 20.49))
    assert (last[col["d_res_low"]], last[col["d_res_high"]]) == pytest.approx((4.70, 4.58))
    assert first[col["pdbx_CC_half"]] == pytest.approx(0.996) and last[col["pdbx_CC_half"]] == pytest.approx(0.457)
    assert first[col["Rmerge_I_obs"]] == pytest.approx(0.074) and last[col["Rmerge_I_obs"]] == pytest.approx(1.563)
    assert last[col["percent_possible_obs"]] == pytest.approx(90.5)
    assert last[col["number_unique_obs"]] == 490
    assert [r[col["mmcat_shell_class"]] for r in rows] == ["inner"] + ["intermediate"] * 18 + ["outer"]
    # shells are contiguous and each Dmid of the file (bin 2: 16.73, bin 10: 6.65) lies inside its shell
    for a, b in zip(rows, rows[1:], strict=False):
        assert a[col["d_res_high"]] == b[col["d_res_low"]]
    assert rows[1][col["d_res_low"]] > 16.73 > rows[1][col["d_res_high"]]
    assert rows[9][col["d_res_low"]] > 6.65 > rows[9][col["d_res_high"]]


def test_one_result_per_dataset(corpus_file, tmp_path, onto):
    """The run with a second dataset (a copy named NATIVE, its tables and its wavelength) added."""
    import copy
    import xml.etree.ElementTree as ET

    root = ET.fromstring(corpus_file(XML).read_bytes())
    ds = root.find("Result/Dataset")
    nat = copy.deepcopy(ds)
    nat.set("name", "XDSproject/XDScrystal/NATIVE")
    nat.find("CChalf/Overall").text = "0.999"
    root.find("Result").append(nat)
    wl = copy.deepcopy(root.find("ReflectionData/Dataset"))
    wl.set("name", "XDSproject/XDScrystal/NATIVE")
    wl.find("Wavelength").text = "1.000000"
    root.find("ReflectionData").append(wl)
    for tb in list(root.iter("CCP4Table")):
        if (tb.get("title") or "").strip().endswith(", XDSdataset"):
            tb2 = copy.deepcopy(tb)
            tb2.set("title", tb.get("title").replace("XDSdataset", "NATIVE"))
            root.append(tb2)
    f = tmp_path / "aimless.xml"
    f.write_bytes(ET.tostring(root))
    p = ADAPTER.parse(f)
    assert [r.label for r in p.results] == ["XDSdataset", "NATIVE"]
    a, ta = values_of(p, onto, "XDSdataset")
    b, tb_ = values_of(p, onto, "NATIVE")
    assert (a["reflns.pdbx_CC_half"], b["reflns.pdbx_CC_half"]) == pytest.approx((0.993, 0.999))
    assert b["diffrn_radiation_wavelength.wavelength"] == pytest.approx(1.0)
    assert len(ta["reflns_shell"].rows) == len(tb_["reflns_shell"].rows) == 20


def test_shell_edges_fallback():
    notes: list[str] = []
    assert shell_edges([0.0012, 0.0036, 0.0060], notes, "x") == pytest.approx([0.0024, 0.0048], abs=1e-6)
    assert notes == []
    uneven = shell_edges([0.001, 0.002, 0.010, 0.011], notes, "x")
    assert uneven == pytest.approx([0.0015, 0.006, 0.0105])
    assert notes and "half-way" in notes[0]


def test_detect(corpus_file):
    p = corpus_file(XML)
    assert ADAPTER.detect(read_head(p), p.name)
    for rel in OTHERS:
        p = corpus_file(rel)
        assert not ADAPTER.detect(read_head(p), p.name), rel
    assert ADAPTER.detect(b'<?xml version="1.0"?>\n<!-- x -->\n<AIMLESS version="0.8.2">', "a.xml")
    assert not ADAPTER.detect(b"<AIMLESSX>", "a.xml")
    assert not ADAPTER.detect(b'<POINTLESS version="1.12">', "p.xml")


def test_detect_never_raises():
    rng = random.Random(9)
    for h in [b"", b"<", b"<?xml", b"<!--"] + [rng.randbytes(rng.randrange(0, 3000)) for _ in range(200)]:
        assert ADAPTER.detect(h, "aimless.xml") in (True, False)
    assert not ADAPTER.detect(None, "x")  # type: ignore[arg-type]


def test_wrong_kind(corpus_file):
    for rel in OTHERS:
        with pytest.raises(ParseError) as e:
            ADAPTER.parse(corpus_file(rel))
        assert e.value.adapter == "aimless_xml"


def test_truncated_and_unfinished(corpus_file, tmp_path):
    data = corpus_file(XML).read_bytes()
    f = tmp_path / "aimless.xml"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(f)
    assert e.value.path == str(f) and e.value.line is not None
    # a well-formed document without the Result element (AIMLESS stopped before the summary)
    cut = data.index(b"<Result>")
    f.write_bytes(data[:cut] + b"</AIMLESS>\n")
    with pytest.raises(ParseError, match="Result"):
        ADAPTER.parse(f)
    f.write_bytes(b'<!DOCTYPE x [<!ENTITY a "b">]><AIMLESS/>')
    with pytest.raises(ParseError, match="DOCTYPE"):
        ADAPTER.parse(f)


def test_fuzz(corpus_file, tmp_path, onto):
    data = corpus_file(XML).read_bytes()
    fuzz_adapter(ADAPTER, data, tmp_path / "aimless.xml", onto, seeds=range(10))


def test_wilson_b_is_read_when_present(corpus_file, tmp_path, onto):
    text = corpus_file(XML).read_text()
    assert "WilsonB" not in text  # the corpus run has none
    i = text.index("<Result")
    j = text.index(">", text.index("<Dataset", i)) + 1
    p = tmp_path / "aimless.xml"
    p.write_text(text[:j] + "<WilsonB>31.4</WilsonB>" + text[j:])
    v, _ = values_of(ADAPTER.parse(p), onto)
    assert v["reflns.B_iso_Wilson_estimate"] == 31.4
