"""`mxcat analyse` on real detector files and `mxcat simulate` arguments (the engine's one-process path)."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import run


def test_analyse_real_frames(capsys, corpus):
    code, out, _ = run(["analyse", str(corpus / "detector/dls-i04_pilatus-6m_minicbf_gridscan_thau_3_2_0001.cbf.bz2"), "--json"], capsys)
    assert code == 0
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["image"] == 1 and row["stats"]["n_spots_total"] == len(row["spots"]["x"]) > 50
    assert row["stats"]["hit"] and 1.0 < row["stats"]["estimated_d_min"] < 5.0  # a thaumatin grid-scan hit
    code, out, _ = run(["analyse", str(corpus / "stream/hdf5plugin_eiger-4m_bslz4_uint32_diffraction_1frame.h5")], capsys)
    assert code == 0 and "hit yes" in out and "resolution -" in out  # no geometry in a bare data file


def test_analyse_bad_file(capsys, tmp_path):
    p = tmp_path / "x.cbf"
    p.write_bytes(b"###CBF: VERSION 1.5\n garbage")
    code, _, err = run(["analyse", str(p)], capsys)
    assert code in (0, 5)  # unreadable CBF files are counted and skipped, or reported; never a traceback
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["analyse", "x.h5", "--method", "magic"],
                                  ["live", "--source", "tcp://127.0.0.1:9", "--method", "magic"],
                                  ["live", "--source", "tcp://127.0.0.1:9", "--protocol", "eiger9"]])
def test_unknown_method_or_protocol_is_a_usage_error(capsys, argv):
    code, _, err = run(argv, capsys)
    assert code == 2 and "choose one of" in err
