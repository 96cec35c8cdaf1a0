"""dozor logs: both column layouts, a run without results, detection, fuzzing, damaged files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mxcat.adapters.dozor_log import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

REAL = "live_analysis/dozor-2.0.2_esrf.log"
NO_RESULTS = "live_analysis/dozor-2.0.2_esrf_no_results.log"
FIXTURE = Path(__file__).resolve().parents[1] / "data" / "adapters" / "dozor-1.3.8-layout_synthetic.log"
OTHERS = [
    "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat",
    "xdsapp/xdsapp_results_maxiv-fragmax_C2.txt",
    "crystfel/crystfel-0.9.1_lcls-cspad_xgandalf_test.stream",
    "xds/CORRECT_xds-2020jan31_esrf.LP",
    "aimless/pointless-1.9.31_esrf-id29.log",
    "crystfel/pilatus.geom",
]

# dozor 1.3.1 (2014): three SPOTS columns and a single Score column, no visible resolution
V131 = """ F
 Program dozor /A.Popov & G.Bourenkov/
 Version 1.3.1 //  03.12.2014
 Copyright 2014 by Alexander Popov and Gleb Bourenkov
 N    |            SPOTS    |        Powder Wilson              |
image | num.of  INTaver Res.|   Scale B-fac. Res. Corr. R-factor|      Score
--------------------------------------------------------------------------------------------------------
    1 |   612      834.  5.3|   27.41  141.2  3.0  97.5    31.9 |     109.204
    2 |   598      802.  5.2|   22.06  149.7  3.1  97.8    25.1 |     128.566
--------------------------------------------------------------------------------------------------------
"""


def _rows(parsed, onto):
    v, tables = values_of(parsed, onto)
    t = tables["mmcat_live_image"]
    return v, [dict(zip(t.columns, row, strict=True)) for row in t.rows]


def test_corpus_values(corpus_file, onto):
    parsed = ADAPTER.parse(corpus_file(REAL))
    assert (parsed.program, parsed.version) == ("dozor", "2.0.2")
    assert parsed.results[0].level == "dataset"
    v, rows = _rows(parsed, onto)
    assert v == {"mmcat_live_summary.n_frames": 10, "mmcat_live_summary.engine": "dozor 2.0.2"}
    assert [r["image_number"] for r in rows] == list(range(1, 11))
    assert rows[0] == {"image_number": 1, "dozor_spots": 2495, "peak_resolution": 1.6, "wilson_b": 13.6,
                       "dozor_score": 967.135, "dozor_resolution": 1.42}
    assert (rows[1]["dozor_spots"], rows[1]["dozor_score"], rows[1]["dozor_resolution"]) == (2417, 1044.98, 1.44)
    assert (rows[9]["dozor_spots"], rows[9]["wilson_b"], rows[9]["dozor_score"]) == (2337, 14.2, 856.429)


def test_run_without_results(corpus_file, onto):
    parsed = ADAPTER.parse(corpus_file(NO_RESULTS))
    v, rows = _rows(parsed, onto)
    assert v["mmcat_live_summary.n_frames"] == 51 and len(rows) == 51
    empty = [r for r in rows if r["dozor_spots"] == 0]
    assert len(empty) == 40  # 51 images, spots on 11-14, 20-23 and 46-48
    assert all(r["dozor_score"] == 0.0 and r["dozor_resolution"] is None and r["wilson_b"] is None for r in empty)
    r13 = rows[12]
    assert (r13["image_number"], r13["dozor_spots"], r13["dozor_score"], r13["dozor_resolution"], r13["wilson_b"]) == \
        (13, 226, 24.979, 2.9, 15.2)
    assert rows[45]["wilson_b"] == -3.2  # image 46: a negative Wilson B is kept
    assert rows[47]["dozor_resolution"] == 6.31


def test_layout_1_3_8(onto):
    parsed = ADAPTER.parse(FIXTURE)
    assert parsed.version == "1.3.8"
    v, rows = _rows(parsed, onto)
    assert v["mmcat_live_summary.n_frames"] == 6
    assert rows[0] == {"image_number": 1, "dozor_spots": 1488, "peak_resolution": 1.8, "wilson_b": 17.2,
                       "dozor_score": 512.334, "dozor_resolution": 1.52}
    assert rows[3]["dozor_spots"] == 0 and rows[3]["dozor_resolution"] is None and rows[3]["wilson_b"] is None
    assert "num.of INTaver Res. |" in parsed.notes[0]


def test_layout_1_3_1(tmp_path, onto):
    p = tmp_path / "dozor.log"
    p.write_text(V131)
    parsed = ADAPTER.parse(p)
    v, rows = _rows(parsed, onto)
    assert parsed.version == "1.3.1"
    assert rows[1] == {"image_number": 2, "dozor_spots": 598, "peak_resolution": 5.2, "wilson_b": 149.7, "dozor_score": 128.566}


def test_empty_table_is_a_valid_result(tmp_path, onto):
    lines = V131.splitlines(keepends=True)
    p = tmp_path / "dozor.log"
    p.write_text("".join(lines[:7] + lines[9:]))
    parsed = ADAPTER.parse(p)
    v, tables = values_of(parsed, onto)
    assert v["mmcat_live_summary.n_frames"] == 0 and tables == {}


def test_detect(corpus_file):
    for p in (corpus_file(REAL), corpus_file(NO_RESULTS), FIXTURE):
        assert ADAPTER.detect(p.read_bytes()[:8192], p.name)
    for rel in OTHERS:
        q = corpus_file(rel)
        assert not ADAPTER.detect(q.read_bytes()[:8192], q.name), rel


def test_detect_never_raises():
    rng = random.Random(13)
    for _ in range(300):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
        assert ADAPTER.detect(blob, "dozor.log") is False


@pytest.mark.parametrize("seed", range(5))
def test_fuzz(corpus_file, onto, tmp_path, seed):
    for k, data in enumerate((corpus_file(REAL).read_bytes(), corpus_file(NO_RESULTS).read_bytes(), V131.encode())):
        fuzz_adapter(ADAPTER, data, tmp_path / "m.log", onto, seeds=[seed + 10 * k], nonempty=True)


def test_wrong_kind(corpus_file):
    for rel in OTHERS[:4]:
        with pytest.raises(ParseError):
            ADAPTER.parse(corpus_file(rel))


def test_truncated(corpus_file, tmp_path):
    data = corpus_file(NO_RESULTS).read_bytes()
    p = tmp_path / "dozor.log"
    for cut in (len(data) // 2, data.rindex(b"\n   51 |") + 1, len(data) - 10):
        p.write_bytes(data[:cut])
        with pytest.raises(ParseError) as exc:
            ADAPTER.parse(p)
        assert exc.value.path == str(p) and exc.value.line is not None


def test_damaged_rows(corpus_file, tmp_path):
    text = corpus_file(REAL).read_text()
    p = tmp_path / "dozor.log"
    p.write_text(text.replace("    3 |  2430     1718.   0.272   1.6|", "    3 |  2430     1718.   0.272|"))
    with pytest.raises(ParseError, match="3 values in the spots columns") as exc:
        ADAPTER.parse(p)
    assert exc.value.line == 9
    p.write_text(text.replace("    3 |  2430", "    2 |  2430"))
    with pytest.raises(ParseError, match="image 2 appears twice"):
        ADAPTER.parse(p)
