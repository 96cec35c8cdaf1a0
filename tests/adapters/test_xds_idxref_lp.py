"""XDS IDXREF.LP adapter: hand-checked indexing solution, failed indexing, detection, fuzzing."""

from __future__ import annotations

import random

import pytest

from mxcat.adapters._util import read_head
from mxcat.adapters.xds_idxref_lp import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

IDXREF = "xds/IDXREF_xds-2020jan31_esrf.LP"
OTHERS = [
    "xds/CORRECT_xds-2010dec06_edna-tryp1.LP",
    "xds/CORRECT_xds-2020jan31_esrf.LP",
    "xds/XSCALE_xds-2014jan10_dls-i04-1_xia2-3daii.LP",
    "xds/XDS_ASCII_header_edna-tryp1.HKL",
    "aimless/pointless-1.9.31_esrf-id29.log",
    "ispyb_xml/edna-esrf-2011_autoproc_data.xml",
    "dials/dials_insulin_scaled.expt",
    "live_analysis/dozor-2.0.2_esrf.log",
]


def test_idxref_2020_hand_checked(corpus_file, onto):
    # "DIFFRACTION PARAMETERS USED AT START OF INTEGRATION" block, then the error at the end of the file.
    p = ADAPTER.parse(corpus_file(IDXREF))
    assert (p.program, p.version) == ("XDS IDXREF", "Jan 31, 2020 (BUILT=20200131)")
    v, t = values_of(p, onto)
    lat = t["mmcat_lattice_character"]
    rows = [dict(zip(lat.columns, row, strict=True)) for row in lat.rows]
    assert len(rows) == 44 and rows[0]["index"] == 44 and rows[0]["bravais_lattice"] == "aP" and rows[0]["consistent"] == "yes"
    assert rows[0]["cell_length_a"] == 91.8 and rows[0]["quality_of_fit"] == 0.0
    assert v["mmcat_integration.n_spots_indexed"] == 540 and v["mmcat_integration.n_spots_used"] == 2186
    assert v["symmetry.Int_Tables_number"] == 1
    assert v["symmetry.space_group_name_H-M"] == "P 1"
    assert [v[f"cell.{k}"] for k in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")] == \
        pytest.approx([91.842, 100.858, 134.899, 101.209, 92.004, 113.735])
    assert v["exptl_crystal.pdbx_mosaicity"] == pytest.approx(0.200)
    assert v["mmcat_integration.refined_detector_distance"] == pytest.approx(236.18)
    assert v["mmcat_integration.refined_beam_centre_x"] == pytest.approx(846.98 * 0.172)
    assert v["mmcat_integration.refined_beam_centre_y"] == pytest.approx(746.13 * 0.172)
    assert [v[f"mmcat_integration.rotation_axis_{c}"] for c in "xyz"] == pytest.approx([0.026882, -0.999638, -0.000674])
    assert v["mmcat_integration.beam_vector_z"] == pytest.approx(1.0, abs=1e-4)
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.965)
    assert v["mmcat_collection.oscillation_width"] == pytest.approx(1.0)
    # the run stopped: fewer than 50 % of the spots indexed
    assert v["mmcat_processing.status"] == "failed"
    assert v["mmcat_processing.message"] == "INSUFFICIENT PERCENTAGE (< 50%) OF INDEXED REFLECTIONS"
    notes = "\n".join(p.notes)
    assert "reduced cell: 91.42 111.03 134.62 100.93 91.34 112.84" in notes
    assert "AUTOMATIC DATA PROCESSING STOPPED" in notes


def test_successful_run(corpus_file, tmp_path, onto):
    text = corpus_file(IDXREF).read_text()
    f = tmp_path / "IDXREF.LP"
    f.write_text(text[: text.index(" !!! ERROR !!!")])
    v, _ = values_of(ADAPTER.parse(f), onto)
    assert v["mmcat_processing.status"] == "success"
    assert "mmcat_processing.message" not in v
    assert v["cell.length_a"] == pytest.approx(91.842)


def test_detect(corpus_file):
    p = corpus_file(IDXREF)
    assert ADAPTER.detect(read_head(p), p.name)
    for rel in OTHERS:
        p = corpus_file(rel)
        assert not ADAPTER.detect(read_head(p), p.name), rel


def test_detect_never_raises():
    rng = random.Random(5)
    for h in [b"", b"\x00", b"*****IDXREF"] + [rng.randbytes(rng.randrange(0, 3000)) for _ in range(200)]:
        assert ADAPTER.detect(h, "IDXREF.LP") in (True, False)
    assert not ADAPTER.detect(None, "x")  # type: ignore[arg-type]


def test_wrong_kind(corpus_file):
    for rel in OTHERS:
        with pytest.raises(ParseError) as e:
            ADAPTER.parse(corpus_file(rel))
        assert e.value.adapter == "xds_idxref_lp"


def test_truncated(corpus_file, tmp_path):
    lines = corpus_file(IDXREF).read_bytes().splitlines(keepends=True)
    f = tmp_path / "IDXREF.LP"
    start = next(i for i, ln in enumerate(lines) if b"USED AT START OF INTEGRATION" in ln)
    for n in (30, start + 5, len(lines) - 20):
        f.write_bytes(b"".join(lines[:n]))
        with pytest.raises(ParseError) as e:
            ADAPTER.parse(f)
        assert e.value.path == str(f) and e.value.line is not None


def test_fuzz(corpus_file, tmp_path, onto):
    data = corpus_file(IDXREF).read_bytes()
    fuzz_adapter(ADAPTER, data, tmp_path / "IDXREF.LP", onto, seeds=range(15))
