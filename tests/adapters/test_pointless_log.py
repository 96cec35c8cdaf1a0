"""POINTLESS log adapter: hand-checked best solution, alternatives as notes, detection, fuzzing."""

from __future__ import annotations

import random

import pytest

from mxcat.adapters._util import read_head
from mxcat.adapters.pointless_log import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

LOG = "aimless/pointless-1.9.31_esrf-id29.log"
OTHERS = [
    "aimless/aimless-0.7.2_soleil_splTsm_2.SUMM.log",
    "aimless/aimless-0.7.2_soleil_P41212_splTsm_2.xml",
    "autoproc/autoPROC-1.0.5-20230222_maxiv_process-log_truncated.log",
    "xds/CORRECT_xds-2020jan31_esrf.LP",
    "xds/XDS_ASCII_header_xds-2020_esrf.HKL",
    "xia2/xia2-0.3.6.3_dls-i04-1_indexing-error_xia2.txt",
    "ispyb_xml/autoproc-style-2017_H32_anonymised_extra-element.xml",
    "dials/dials_insulin_scaled.expt",
]


def test_esrf_id29_hand_checked(corpus_file, onto):
    p = ADAPTER.parse(corpus_file(LOG))
    assert (p.program, p.version) == ("POINTLESS", "1.9.31")
    assert p.hints == {"dataset": "xtal5w1_1"}  # from the echoed XDS_ASCII header
    v, t = values_of(p, onto)
    cands = t["mmcat_space_group_candidate"]
    rows = [dict(zip(cands.columns, row, strict=True)) for row in cands.rows]
    laue = [r for r in rows if r["kind"] == "laue_group"]
    assert (laue[0]["name_H-M"], laue[0]["probability"], laue[0]["accepted"]) == ("C m m m", 0.989, "yes")
    assert len(laue) == 5 and laue[4]["name_H-M"] == "P -1"
    sg = [r for r in rows if r["kind"] == "space_group"]
    assert sg[0]["IT_number"] == 21 and sg[0]["accepted"] == "yes"
    assert v["mmcat_processing.space_group_confidence"] == 0.989 and v["mmcat_processing.laue_group_confidence"] == 0.987
    assert v["symmetry.space_group_name_H-M"] == "C 2 2 2"
    assert v["symmetry.Int_Tables_number"] == 21
    assert v["mmcat_processing.status"] == "success"
    # "Unit cell:   52.55 148.80  79.68     91.00  92.00  93.00" (as printed in the Best Solution block)
    assert [v[f"cell.{k}"] for k in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")] == \
        pytest.approx([52.55, 148.80, 79.68, 91.0, 92.0, 93.0])
    notes = "\n".join(p.notes)
    assert "breaks the symmetry of C 2 2 2" in notes
    assert "total probability 0.989" in notes and "space group confidence 0.989" in notes and "laue group confidence 0.987" in notes
    assert "reindex operator [h,k,l]" in notes
    assert "CCP4 6.5.010" in notes


def test_point_group_only_and_fatal(corpus_file, tmp_path, onto):
    text = corpus_file(LOG).read_text()
    f = tmp_path / "pointless.log"
    f.write_text(text.replace("Best Solution:    space group C 2 2 2", "Best Solution:    point group C 2 2 2"))
    p = ADAPTER.parse(f)
    v, _ = values_of(p, onto)
    assert "symmetry.space_group_name_H-M" not in v and v["cell.length_b"] == pytest.approx(148.80)
    assert any("point group C 2 2 2 only" in n for n in p.notes)
    head = text[: text.index("Reading XDS ascii file")]
    f.write_text(head + "\n  FATAL ERROR message:\n  Cannot open file XDS_ANOM.HKL\n")
    v, _ = values_of(ADAPTER.parse(f), onto)
    assert v["mmcat_processing.status"] == "failed"
    assert "Cannot open file XDS_ANOM.HKL" in v["mmcat_processing.message"]


def test_detect(corpus_file):
    p = corpus_file(LOG)
    assert ADAPTER.detect(read_head(p), p.name)
    for rel in OTHERS:
        p = corpus_file(rel)
        assert not ADAPTER.detect(read_head(p), p.name), rel
    assert not ADAPTER.detect(b" ### CCP4 8.0.010: AIMLESS          version 0.7.9 : 12/12/21##\n", "aimless.log")
    assert ADAPTER.detect(b" ### CCP4 8.0.010: POINTLESS        version 1.12.14 : 13/09/22##\n", "pointless.log")


def test_detect_never_raises():
    rng = random.Random(4)
    for h in [b"", b"###", b"### CCP4"] + [rng.randbytes(rng.randrange(0, 3000)) for _ in range(200)]:
        assert ADAPTER.detect(h, "pointless.log") in (True, False)
    assert not ADAPTER.detect(None, "x")  # type: ignore[arg-type]


def test_wrong_kind(corpus_file):
    for rel in OTHERS:
        with pytest.raises(ParseError) as e:
            ADAPTER.parse(corpus_file(rel))
        assert e.value.adapter == "pointless_log"


def test_truncated(corpus_file, tmp_path):
    lines = corpus_file(LOG).read_bytes().splitlines(keepends=True)
    best = next(i for i, ln in enumerate(lines) if b"Best Solution:" in ln)
    f = tmp_path / "pointless.log"
    for n in (100, best + 3):
        f.write_bytes(b"".join(lines[:n]))
        with pytest.raises(ParseError) as e:
            ADAPTER.parse(f)
        assert e.value.path == str(f) and e.value.line is not None


def test_fuzz(corpus_file, tmp_path, onto):
    data = corpus_file(LOG).read_bytes()
    fuzz_adapter(ADAPTER, data, tmp_path / "pointless.log", onto, seeds=range(15))
