"""CrystFEL streams: run counts and rows checked against grep, several crystals per frame, detection, fuzzing, damage."""

from __future__ import annotations

import gzip
import random
import re
import statistics

import pytest

from mxcat.adapters.crystfel_stream import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

REAL = "crystfel/crystfel-0.9.1_lcls-cspad_xgandalf_test.stream"
OTHERS = [
    "crystfel/cspad-cxiformat.geom",
    "crystfel/cell-example.cell",
    "crystfel/pilatus.geom",
    "live_analysis/dozor-2.0.2_esrf.log",
    "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat",
    "dials/dials_insulin_scaled.expt",
]


def _tables(parsed, onto):
    v, tables = values_of(parsed, onto)
    rows = {c: [dict(zip(t.columns, r, strict=True)) for r in t.rows] for c, t in tables.items()}
    return v, rows


def test_corpus_values(corpus_file, onto):
    path = corpus_file(REAL)
    text = path.read_text()
    parsed = ADAPTER.parse(path)
    assert (parsed.program, parsed.version) == ("CrystFEL", "0.9.1+2c51b20e")
    assert len(parsed.results) == 1 and parsed.results[0].level == "processing"
    v, rows = _tables(parsed, onto)
    # grep -c: 70 "Begin chunk", 70 "hit = 1", 32 "Begin crystal", 32 "indexed_by" other than none, one crystal per frame
    assert text.count("----- Begin chunk -----") == 70 and text.count("\nhit = 1\n") == 70
    assert text.count("--- Begin crystal") == 32 and text.count("indexed_by = none") == 38
    red = "pdbx_serial_crystallography_data_reduction"
    assert (v[f"{red}.frames_total"], v[f"{red}.frame_hits"], v[f"{red}.frames_indexed"]) == (70, 70, 32)
    assert (v[f"{red}.lattices_indexed"], v[f"{red}.frames_failed_index"]) == (32, 38)
    assert (v["mmcat_live_summary.n_frames"], v["mmcat_live_summary.n_hits"], v["mmcat_live_summary.n_indexed"]) == (70, 70, 32)
    assert v["mmcat_live_summary.hit_rate"] == 100.0
    assert v["mmcat_live_summary.indexing_rate"] == pytest.approx(100 * 32 / 70)
    assert v["mmcat_live_summary.engine"] == "CrystFEL 0.9.1+2c51b20e"
    assert v["mmcat_processing.program_version"] == "0.9.1+2c51b20e"
    assert v["mmcat_processing.command_line"].endswith("-p 5HT2B.cell --indexing=xgandalf")
    # cell means and sample SDs, nm -> A, recomputed here from the Cell parameters lines
    cells = [[float(x) for x in m] for m in re.findall(r"^Cell parameters (\S+) (\S+) (\S+) nm, (\S+) (\S+) (\S+) deg$", text, re.M)]
    assert len(cells) == 32
    for i, name in enumerate(("length_a", "length_b", "length_c")):
        col = [c[i] * 10 for c in cells]
        assert v[f"mmcat_live_summary.cell_{name}_mean"] == pytest.approx(statistics.fmean(col))
        assert v[f"mmcat_live_summary.cell_{name}_sd"] == pytest.approx(statistics.stdev(col))
    assert v["mmcat_live_summary.cell_length_a_mean"] == pytest.approx(61.526303, abs=1e-5)  # awk over the 32 cells
    assert v["mmcat_live_summary.cell_angle_beta_mean"] == pytest.approx(statistics.fmean(c[4] for c in cells))
    assert v["mmcat_collection.detector_distance"] == pytest.approx(152.001)  # average_camera_length = 0.152001 m
    assert 9500 < v["mmcat_collection.photon_energy"] * 1000 < 9530  # keV; per-frame photon_energy_eV about 9.51 keV

    images, crystals = rows["mmcat_live_image"], rows["mmcat_live_crystal"]
    assert len(images) == 70 and len(crystals) == 32
    # indexamajig -j 3 writes frames in the order they finish: serial numbers 1 2 3 5 6 ... 4 ...
    assert [im["image_number"] for im in images][:5] == [1, 2, 3, 5, 6]
    assert sorted(im["image_number"] for im in images) == list(range(1, 71))
    first = images[0]
    assert first["image_path"] == "r0092-ab/data1/LCLS_2013_Mar22_r0092_035103_1824f.h5"
    assert (first["hit"], first["indexed_by"], first["n_indexing_tries"], first["n_crystals"]) == (1, "xgandalf-nolatt-cell", 1, 1)
    assert (first["n_spots_total"], first["peak_resolution"]) == (20, 2.579439)
    assert (images[69]["indexed_by"], images[69]["n_crystals"], images[69]["n_spots_total"]) == ("none", 0, 62)
    assert images[69]["peak_resolution"] == 2.460597
    assert sum(im["n_spots_total"] for im in images) == 2172  # grep num_peaks | awk sum
    c = crystals[0]
    assert (c["image_number"], c["crystal_index"]) == (1, 1)
    assert (c["cell_length_a"], c["cell_length_b"], c["cell_length_c"]) == pytest.approx((61.3532, 121.9726, 168.8163))
    assert (c["cell_angle_alpha"], c["cell_angle_beta"], c["cell_angle_gamma"]) == (90.54524, 91.23016, 90.53769)
    assert (c["lattice_type"], c["centering"], c["unique_axis"]) == ("orthorhombic", "C", None)
    assert c["profile_radius"] == pytest.approx(0.000258)  # 0.00258 nm^-1
    assert c["resolution_limit"] == 5.56
    assert (c["n_reflections"], c["n_saturated_reflections"], c["n_implausible_reflections"]) == (257, 0, 0)
    assert crystals[-1]["image_number"] == 65
    assert crystals[-1]["cell_length_a"] == pytest.approx(61.5393)


def _with_second_crystal(text: str) -> str:
    start = text.index("--- Begin crystal")
    end = text.index("--- End crystal\n", start) + len("--- End crystal\n")
    return text[:end] + text[start:end] + text[end:]


def test_several_crystals_on_one_frame(corpus_file, tmp_path, onto):
    p = tmp_path / "multi.stream"
    p.write_text(_with_second_crystal(corpus_file(REAL).read_text()).replace(
        "Image serial number: 1\n", "Image serial number: 1\nEvent: //7\n", 1))
    v, rows = _tables(ADAPTER.parse(p), onto)
    red = "pdbx_serial_crystallography_data_reduction"
    assert (v[f"{red}.frames_indexed"], v[f"{red}.lattices_indexed"], v[f"{red}.frames_failed_index"]) == (32, 33, 38)
    assert rows["mmcat_live_image"][0]["n_crystals"] == 2 and rows["mmcat_live_image"][0]["event"] == "//7"
    crystals = rows["mmcat_live_crystal"]
    assert [(c["image_number"], c["crystal_index"]) for c in crystals[:2]] == [(1, 1), (1, 2)]
    assert crystals[2]["image_number"] > 1 and crystals[2]["crystal_index"] == 1


def test_compressed_and_concatenated(corpus_file, tmp_path, onto):
    data = corpus_file(REAL).read_bytes()
    p = tmp_path / "run.stream.gz"
    p.write_bytes(gzip.compress(data + data))
    v, rows = _tables(ADAPTER.parse(p), onto)
    assert v["pdbx_serial_crystallography_data_reduction.frames_total"] == 140
    assert len(rows["mmcat_live_crystal"]) == 64


def test_detect(corpus_file):
    p = corpus_file(REAL)
    assert ADAPTER.detect(p.read_bytes()[:8192], p.name)
    for rel in OTHERS:
        q = corpus_file(rel)
        assert not ADAPTER.detect(q.read_bytes()[:8192], q.name), rel


def test_detect_never_raises():
    rng = random.Random(17)
    for _ in range(300):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
        assert ADAPTER.detect(blob, "x.stream") is False


@pytest.mark.parametrize("seed", range(3))
def test_fuzz(corpus_file, onto, tmp_path, seed):
    data = corpus_file(REAL).read_bytes()
    fuzz_adapter(ADAPTER, data, tmp_path / "m.stream", onto, seeds=[seed], n=8, nonempty=True)


def test_wrong_kind(corpus_file):
    for rel in OTHERS[:5]:
        with pytest.raises(ParseError):
            ADAPTER.parse(corpus_file(rel))


def test_truncated(corpus_file, tmp_path):
    data = corpus_file(REAL).read_bytes()
    p = tmp_path / "cut.stream"
    for cut in (len(data) // 2, len(data) - 5, data.index(b"----- End geometry file"), data.index(b"--- End crystal") + 3):
        p.write_bytes(data[:cut])
        with pytest.raises(ParseError) as exc:
            ADAPTER.parse(p)
        assert exc.value.path == str(p) and exc.value.line is not None


def test_damaged_lines(corpus_file, tmp_path):
    text = corpus_file(REAL).read_text()
    p = tmp_path / "bad.stream"
    for old, new, reason in [
        ("num_peaks = 20\n", "num_peaks = twenty\n", "not a count"),
        ("hit = 1\n", "hit = 1\nhit = 1\n", "twice"),
        ("Cell parameters 6.13532", "Cell parameters -6.13532", "cell"),
        ("End of peak list\n", "End of peak lis\n", "never ended"),
        ("----- End chunk -----\n", "----- End chunk -----\nstray line\n", "between chunks"),
    ]:
        p.write_text(text.replace(old, new, 1))
        with pytest.raises(ParseError, match=reason) as exc:
            ADAPTER.parse(p)
        assert exc.value.line is not None
