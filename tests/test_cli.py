"""The command line: version, demo, ontology commands, and the mapping of errors to exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mxcat import __version__
from mxcat.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as ex:
        main(argv)
    out = capsys.readouterr()
    code = ex.value.code if isinstance(ex.value.code, int) else (0 if ex.value.code is None else 1)
    return code, out.out, out.err


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and __version__ in out


def test_demo_runs_and_summarises(capsys, tmp_path):
    code, out, _ = run(["demo", "--data-dir", str(tmp_path)], capsys)
    assert code == 0
    out = " ".join(out.split())  # the console wraps lines where it likes (a drop count makes them longer)
    assert "15 values stored" in out and "stored 0 new values" in out
    assert "simulated Eiger frames" in out and "1 series stored in the catalogue" in out
    assert "rejected" in out and "out of range" in out
    assert "1 subject(s)" in out
    import sqlite3

    db = sqlite3.connect(tmp_path / "catalogue.sqlite")
    got = dict(db.execute("SELECT r.key, r.value FROM records r JOIN subjects s USING (subject_id) "
                          "WHERE s.path LIKE '%thau3_1%' AND s.path NOT LIKE '%ispyb_xml%'"))
    assert got["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.074)  # 7.4 percent from ESRF-flavour ISPyB
    assert got["reflns_shell.outer.Rmerge_I_obs"] == pytest.approx(1.21)  # a Diamond fraction stays as is
    assert got["mmcat_collection.beam_size_x"] == pytest.approx(50.0)  # mm to micrometres


def test_show_resolves_any_name(capsys):
    code, out, _ = run(["ontology", "show", "MXAutoprocIntegrationScaling_outer_cc_half", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["key"] == "reflns_shell.outer.pdbx_CC_half" and d["units"] == "none"
    assert any(m["target"] == "AutoProcScalingStatistics.ccHalf" for m in d["mappings"])


def test_resolve_and_validate(capsys):
    code, out, _ = run(["ontology", "resolve", "AutoProcScalingStatistics.ccHalf", "--selector", "scalingStatisticsType=innerShell"], capsys)
    assert code == 0 and out.strip() == "reflns_shell.inner.pdbx_CC_half"
    code, out, _ = run(["ontology", "validate", "reflns.d_resolution_high", "0.18", "--unit", "nm"], capsys)
    assert code == 0 and out.strip() == "reflns.d_resolution_high = 1.8 angstroms"
    # a mapped name brings the unit its vocabulary uses
    code, out, _ = run(["ontology", "validate", "DataCollection.beamSizeAtSampleX", "0.05", "--scheme", "ispyb"], capsys)
    assert code == 0 and out.strip() == "mmcat_collection.beam_size_x = 50.0 micrometres"
    code, out, _ = run(["ontology", "validate", "AutoProcScalingStatistics.rMerge", "0.062", "--scheme", "ispyb_dls",
                        "--selector", "scalingStatisticsType=outerShell"], capsys)
    assert code == 0 and out.strip() == "reflns_shell.outer.Rmerge_I_obs = 0.062"


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["ontology", "validate", "reflns.d_resolution_high", "--", "-3"], 6, "out of range"),
        (["ontology", "validate", "reflns.d_resolution_hihg", "1"], 6, "did you mean reflns.d_resolution_high"),
        (["ontology", "resolve", "AutoProcScalingStatistics.ccHalf"], 6, "ambiguous"),
        (["ontology", "lint", "/no/such/dir"], 4, "/no/such/dir"),
    ],
)
def test_errors_map_to_exit_codes_with_one_line(capsys, argv, code, text):
    got, _, err = run(argv, capsys)
    assert got == code
    assert text in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(capsys):
    got, _, err = run(["--debug", "ontology", "validate", "reflns.d_resolution_high", "--", "-3"], capsys)
    assert got == 6 and "Traceback" in err


def test_search(capsys):
    code, out, _ = run(["ontology", "search", "anomalous completeness", "--json"], capsys)
    assert code == 0
    assert "_reflns.pdbx_percent_possible_anomalous" in {d["name"] for d in json.loads(out)}


def test_lint_passes_on_the_shipped_set(capsys, ddl_path, pdbx_path):
    code, out, _ = run(["ontology", "lint", "--ddl", str(ddl_path), "--pdbx", str(pdbx_path)], capsys)
    assert code == 0 and "ok" in out


def test_lint_fails_with_file_and_line(capsys, dict_copy, ddl_path):
    p = dict_copy / "mmcat_live.dic"
    p.write_text(p.read_text().replace("_item_type.code                        int", "_item_type.code                        integer", 1))
    code, out, _ = run(["ontology", "lint", str(dict_copy), "--ddl", str(ddl_path), "--json"], capsys)
    assert code == 1
    problems = json.loads(out)["problems"]
    assert any(pr["rule"] == "type-unknown" and pr["path"].endswith("mmcat_live.dic") and pr["line"] for pr in problems)


def test_diff_exits_non_zero_on_breaking_changes(capsys, dict_copy):
    from mxcat.ontology.loader import default_directory

    code, out, _ = run(["ontology", "diff", str(default_directory()), str(dict_copy)], capsys)
    assert code == 0 and "0 change(s)" in out
    p = dict_copy / "mmcat_collection.dic"
    p.write_text(p.read_text().replace("_item_units.code                       micrometres", "_item_units.code                       millimetres", 1))
    code, out, _ = run(["ontology", "diff", str(default_directory()), str(dict_copy)], capsys)
    assert code == 1 and "units-changed" in out


@pytest.mark.parametrize("what", ["icat", "scicat", "docs"])
def test_export(capsys, tmp_path, what):
    dst = tmp_path / f"out.{what}"
    code, _, _ = run(["ontology", "export", what, "-o", str(dst)], capsys)
    assert code == 0 and dst.stat().st_size > 1000


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "mxcat", "ontology", "resolve", "MX_detectorDistance"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "mmcat_collection.detector_distance"
