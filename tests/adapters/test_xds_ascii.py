"""XDS_ASCII.HKL header adapter: hand-checked header values, detection, truncation, fuzzing."""

from __future__ import annotations

import random

import pytest

from mxcat.adapters._util import read_head
from mxcat.adapters.xds_ascii import ADAPTER, direct_beam
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

TRYP = "xds/XDS_ASCII_header_edna-tryp1.HKL"
ESRF = "xds/XDS_ASCII_header_xds-2020_esrf.HKL"
OTHERS = [
    "xds/CORRECT_xds-2010dec06_edna-tryp1.LP",
    "xds/IDXREF_xds-2020jan31_esrf.LP",
    "xds/XSCALE_xds-2014jan10_dls-i04-1_xia2-3daii.LP",
    "aimless/pointless-1.9.31_esrf-id29.log",  # echoes an XDS_ASCII header in its middle
    "aimless/aimless-0.7.2_soleil_P41212_splTsm_2.xml",
    "ispyb_xml/autoproc-1.1.7-20221123_esrf_2023_staraniso.xml",
    "dials/dials_insulin_scaled.expt",
    "crystfel/cell-example.cell",
]


def test_name():
    assert ADAPTER.name == "xds_ascii_header"


def test_tryp1_2012_hand_checked(corpus_file, onto):
    p = ADAPTER.parse(corpus_file(TRYP))
    assert (p.program, p.version) == ("XDS CORRECT", "March 15, 2012")
    assert p.hints == {"dataset": "TIRdelta_25_4"}
    v, t = values_of(p, onto)
    assert t == {}
    assert v["symmetry.Int_Tables_number"] == 16
    assert v["symmetry.space_group_name_H-M"] == "P 2 2 2"
    assert [v[f"cell.{k}"] for k in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")] == \
        pytest.approx([32.224, 36.554, 110.106, 90, 90, 90])
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.976280)
    assert v["mmcat_integration.refined_detector_distance"] == pytest.approx(372.572)
    assert (v["mmcat_integration.start_image_number"], v["mmcat_integration.end_image_number"]) == (1, 130)
    assert v["mmcat_collection.oscillation_width"] == pytest.approx(0.7)
    assert v["exptl_crystal.pdbx_mosaicity"] == pytest.approx(0.251)
    assert v["reflns.mmcat_ISa"] == pytest.approx(1 / (5.625 * 3.217e-4) ** 0.5, abs=0.01)
    assert v["mmcat_processing.anomalous"] == "no"
    assert [v[f"mmcat_integration.rotation_axis_{c}"] for c in "xyz"] == pytest.approx([0.999997, 0.0013, -0.00206])
    # ORGX 1546.40, ORGY 1557.85 plus the beam's tilt: 372.572 * (0.001160, -0.001811) / 1.024294 / 0.1026 px
    bx = 1546.40 + 372.572 * 0.001160 / 1.024294 / 0.1026
    by = 1557.85 - 372.572 * 0.001811 / 1.024294 / 0.1026
    assert v["mmcat_integration.refined_beam_centre_x"] == pytest.approx(bx * 0.1026, abs=1e-3)
    assert v["mmcat_integration.refined_beam_centre_y"] == pytest.approx(by * 0.1026, abs=1e-3)


def test_esrf_2020_hand_checked(corpus_file, onto):
    p = ADAPTER.parse(corpus_file(ESRF))
    assert (p.program, p.version) == ("XDS CORRECT", "Jan 31, 2020 (BUILT=20200131)")
    v, _ = values_of(p, onto)
    assert v["symmetry.Int_Tables_number"] == 1
    assert [v[f"cell.{k}"] for k in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")] == \
        pytest.approx([92.548, 92.628, 128.546, 90.004, 90.055, 120.029])
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.965)
    assert v["mmcat_integration.refined_detector_distance"] == pytest.approx(236.175)
    assert (v["mmcat_integration.start_image_number"], v["mmcat_integration.end_image_number"]) == (1, 1)
    assert v["mmcat_collection.oscillation_width"] == pytest.approx(1.0)
    assert "reflns.mmcat_ISa" not in v  # VARIANCE_MODEL 4.0, 1.0E-04 is XDS's unrefined default
    assert any("VARIANCE_MODEL" in n for n in p.notes)


def test_direct_beam_matches_correct_lp():
    # CORRECT_xds-2010dec06 prints DETECTOR COORDINATES (PIXELS) OF DIRECT BEAM 1226.30 1255.30 for these values.
    h = {"ORGX": "1242.08", "ORGY": "1246.83", "DETECTOR_DISTANCE": "357.05", "QX": "0.172", "QY": "0.172",
         "INCIDENT_BEAM_DIRECTION": "-0.007784  0.004180  1.024269"}
    assert direct_beam(h) == pytest.approx((1226.30, 1255.30), abs=0.01)
    assert direct_beam({}) is None


def test_detect(corpus_file):
    for rel in (TRYP, ESRF):
        p = corpus_file(rel)
        assert ADAPTER.detect(read_head(p), p.name)
    for rel in OTHERS:
        p = corpus_file(rel)
        assert not ADAPTER.detect(read_head(p), p.name), rel


def test_detect_never_raises():
    rng = random.Random(2)
    for h in [b"", b"!", b"!FORMAT=XDS"] + [rng.randbytes(rng.randrange(0, 3000)) for _ in range(200)]:
        assert ADAPTER.detect(h, "XDS_ASCII.HKL") in (True, False)
    assert not ADAPTER.detect(None, "x")  # type: ignore[arg-type]


def test_wrong_kind(corpus_file):
    for rel in OTHERS:
        with pytest.raises(ParseError) as e:
            ADAPTER.parse(corpus_file(rel))
        assert e.value.adapter == "xds_ascii_header"


def test_truncated_and_reflections(corpus_file, tmp_path, onto):
    data = corpus_file(TRYP).read_bytes()
    f = tmp_path / "XDS_ASCII.HKL"
    f.write_bytes(data[: data.index(b"!END_OF_HEADER")])
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(f)
    assert e.value.path == str(f) and e.value.line is not None and "END_OF_HEADER" in e.value.reason
    # a full file: reflections after the header are not read
    f.write_bytes(data + b"     0     0     4  0.4071E+01  0.1181E+01  1546.4  1557.8    52.1 0.04000  100  36  -0.09\n" * 1000
                  + b"!END_OF_DATA\n")
    v, _ = values_of(ADAPTER.parse(f), onto)
    assert v["symmetry.Int_Tables_number"] == 16
    f.write_bytes(b"")
    with pytest.raises(ParseError):
        ADAPTER.parse(f)


def test_xscale_output_header(tmp_path, onto):
    f = tmp_path / "XSCALE.HKL"
    f.write_text("!FORMAT=XDS_ASCII    MERGE=TRUE    FRIEDEL'S_LAW=FALSE\n"
                 "!OUTPUT_FILE=XSCALE.HKL        DATE=15-May-2014\n"
                 "!Generated by XSCALE   (VERSION January 10, 2014  BUILT=20140307)\n"
                 "!SPACE_GROUP_NUMBER=   20\n"
                 "!UNIT_CELL_CONSTANTS=    83.50    96.74    57.97  90.000  90.000  90.000\n"
                 "!ISET= 1 INPUT_FILE=SAD_SWEEP1.HKL\n"
                 "!ISET= 1 X-RAY_WAVELENGTH=  0.979500\n"
                 "!END_OF_HEADER\n")
    p = ADAPTER.parse(f)
    assert (p.program, p.version) == ("XDS XSCALE", "January 10, 2014 (BUILT=20140307)")
    v, _ = values_of(p, onto)
    assert v["symmetry.space_group_name_H-M"] == "C 2 2 21"
    assert v["mmcat_processing.anomalous"] == "yes"
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.9795)


@pytest.mark.parametrize("rel", [TRYP, ESRF])
def test_fuzz(corpus_file, tmp_path, onto, rel):
    data = corpus_file(rel).read_bytes()
    fuzz_adapter(ADAPTER, data, tmp_path / "XDS_ASCII.HKL", onto, seeds=range(15))
