"""`mxcat ingest`, `mxcat parse` and `mxcat adapters` on real corpus files, end to end."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from tests.test_cli import run


@pytest.fixture()
def files(tmp_path, corpus):
    d = tmp_path / "in"
    d.mkdir()
    for rel in ("ispyb_xml/autoproc-1.1.7-20221123_esrf_2023_staraniso.xml", "xds/CORRECT_xds-2010dec06_edna-tryp1.LP",
                "xia2/xia2-0.3.6.3_dls-i04-1_indexing-error_xia2.txt", "detector/dls-i03-eiger16m_xrc_209_master.h5",
                "crystfel/cell-example.cell"):
        shutil.copy(corpus / rel, d / rel.split("/")[-1])
    (d / "broken.xml").write_text("<AutoProcContainer><AutoProc><spaceGroup>P 1</spaceGroup>\n<refinedCell_a>")
    return d


def test_ingest_a_directory(capsys, data_dir, files):
    code, out, _ = run(["ingest", str(files), "--beamline", "ID30A-1", "--proposal", "mx2532", "--json"], capsys)
    s = json.loads(out)
    assert code == 5  # one file failed to parse: reported, and the others stored
    assert s["by_adapter"] == {"ispyb_xml": 1, "xds_correct_lp": 1, "xia2_txt": 1, "nxmx_master": 1}
    assert [p.split("/")[-1] for p in s["unclaimed"]] == ["cell-example.cell"]
    assert len(s["errors"]) == 1 and "broken.xml" in s["errors"][0] and "[ispyb_xml]" in s["errors"][0]
    assert s["stored"] > 50 and s["delivered"] >= s["stored"]
    db = sqlite3.connect(data_dir / "catalogue.sqlite")
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM subjects GROUP BY kind"))
    assert kinds["processing"] >= 4  # isotropic + staraniso + CORRECT + failed xia2
    status = dict(db.execute("SELECT s.path, r.value FROM records r JOIN subjects s USING (subject_id) WHERE r.key = 'mmcat_processing.status'"))
    assert "failed" in status.values()
    # the same files again change nothing
    code, out, _ = run(["ingest", str(files), "--beamline", "ID30A-1", "--proposal", "mx2532", "--json"], capsys)
    again = json.loads(out)
    assert again["stored"] == 0 and again["unchanged"] == s["stored"]


def test_query_after_ingest(capsys, data_dir, files):
    run(["ingest", str(files / "autoproc-1.1.7-20221123_esrf_2023_staraniso.xml"), "--beamline", "ID30A-1"], capsys)
    code, out, _ = run(["query", "reflns.d_resolution_high < 1.45", "--json"], capsys)
    hits = json.loads(out)
    assert len(hits) == 1 and "staraniso" in hits[0]["path"]


def test_parse_shows_without_storing(capsys, data_dir, files):
    code, out, _ = run(["parse", str(files / "CORRECT_xds-2010dec06_edna-tryp1.LP"), "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["adapter"] == "xds_correct_lp"
    keys = {v["key"] for r in d["results"] for v in r["values"]}
    assert "reflns.d_resolution_high" in keys
    assert not (data_dir / "catalogue.sqlite").exists()


def test_adapters_list_and_explain(capsys, files):
    code, out, _ = run(["adapters", "list"], capsys)
    assert code == 0 and "ispyb_xml" in out and "failed to load" not in out
    code, out, _ = run(["adapters", "explain", str(files / "xia2-0.3.6.3_dls-i04-1_indexing-error_xia2.txt")], capsys)
    assert "one adapter claims it" in out


def test_dry_run_stores_nothing(capsys, data_dir, files):
    code, out, _ = run(["ingest", str(files / "CORRECT_xds-2010dec06_edna-tryp1.LP"), "--beamline", "B", "--dry-run", "--json"], capsys)
    assert json.loads(out)["stored"] > 10
    assert not (data_dir / "catalogue.sqlite").exists() or sqlite3.connect(data_dir / "catalogue.sqlite").execute(
        "SELECT COUNT(*) FROM records").fetchone()[0] == 0


def test_ingest_needs_a_beamline_or_facility(capsys, data_dir, files):
    code, out, _ = run(["ingest", str(files / "CORRECT_xds-2010dec06_edna-tryp1.LP"), "--json"], capsys)
    assert code == 5 and "beamline" in json.loads(out)["errors"][0]


def test_parse_errors_name_adapter_file_and_line(capsys, tmp_path, corpus):
    bad = tmp_path / "run[red]" / "xia2-summary.dat"
    bad.parent.mkdir()
    text = (corpus / "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat").read_text()
    bad.write_text(text[: len(text) // 2].rsplit("\n", 1)[0] + "\nHigh resolution limit\tnot-a-number\n")
    code, _, err = run(["parse", str(bad)], capsys)
    assert code == 5
    assert "[xia2_summary]" in err and "run[red]/xia2-summary.dat:" in err
