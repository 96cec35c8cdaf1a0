"""xia2.txt: the failed corpus run, a finished run (own fixture), detection, fuzzing, damaged files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mxcat.adapters.xia2_summary import ADAPTER as SUMMARY
from mxcat.adapters.xia2_txt import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

FAILED = "xia2/xia2-0.3.6.3_dls-i04-1_indexing-error_xia2.txt"
SUMMARY_FILE = "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat"
FIXTURE = Path(__file__).resolve().parents[1] / "data" / "adapters" / "xia2-0.4.0.0_synthetic_lyso-SAD_xia2.txt"
OTHERS = [
    SUMMARY_FILE,
    "xdsapp/xdsapp_results_maxiv-fragmax_C2.txt",
    "dials/dials_insulin_scaled.expt",
    "live_analysis/dozor-2.0.2_esrf.log",
    "crystfel/jungfrau16m-swissfel.geom",
    "xds/XSCALE_xds-2014jan10_dls-i04-1_xia2-3daii.LP",
    "aimless/pointless-1.9.31_esrf-id29.log",
]


def test_failed_run(corpus_file, onto):
    parsed = ADAPTER.parse(corpus_file(FAILED))
    assert (parsed.program, parsed.version) == ("xia2", "0.3.6.3")
    assert len(parsed.results) == 1 and parsed.results[0].level == "processing"
    v, _ = values_of(parsed, onto)
    assert v["mmcat_processing.status"] == "failed"
    assert v["mmcat_processing.message"] == "error in indexing"
    assert v["mmcat_processing.message_severity"] == "ERROR"
    assert v["mmcat_processing.program_version"] == "0.3.6.3"
    assert v["mmcat_processing.command_line"].startswith("xia2 -min_images 3 -3da ")
    assert not any(k.startswith(("reflns", "cell.", "symmetry.")) for k in v)


def test_finished_run(onto):
    parsed = ADAPTER.parse(FIXTURE)
    assert (parsed.program, parsed.version) == ("xia2", "0.4.0.0")
    assert [r.label for r in parsed.results] == ["SAD"]
    assert parsed.hints == {"dataset": "lyso2_1"}
    v, _ = values_of(parsed, onto)
    assert v["mmcat_processing.status"] == "success"
    assert (v["reflns.d_resolution_high"], v["reflns.d_resolution_low"]) == (1.45, 39.52)
    assert (v["reflns_shell.inner.d_res_high"], v["reflns_shell.outer.d_res_low"]) == (3.94, 1.47)
    assert (v["reflns.percent_possible_obs"], v["reflns_shell.outer.percent_possible_obs"]) == (99.7, 96.8)
    assert (v["reflns.pdbx_redundancy"], v["reflns_shell.inner.pdbx_redundancy"]) == (12.8, 11.9)
    assert (v["reflns.pdbx_netI_over_sigmaI"], v["reflns_shell.outer.pdbx_netI_over_sigmaI_obs"]) == (21.4, 1.6)
    assert (v["reflns.pdbx_Rmerge_I_obs"], v["reflns_shell.outer.Rmerge_I_obs"]) == (0.071, 1.382)
    assert (v["reflns.pdbx_Rrim_I_all"], v["reflns.mmcat_Rmeas_within_IplusIminus"]) == (0.074, 0.073)
    assert (v["reflns.pdbx_Rpim_I_all"], v["reflns_shell.outer.mmcat_Rpim_within_IplusIminus"]) == (0.021, 0.629)
    assert (v["reflns.pdbx_CC_half"], v["reflns_shell.inner.pdbx_CC_half"], v["reflns_shell.outer.pdbx_CC_half"]) == (0.999, 0.999, 0.612)
    assert v["reflns.B_iso_Wilson_estimate"] == 14.27
    assert v["reflns_shell.outer.pdbx_CC_half_anomalous"] == -0.031
    assert v["reflns.pdbx_absDiff_over_sigma_anomalous"] == 1.106
    assert (v["reflns.pdbx_number_measured_all"], v["reflns.number_obs"]) == (275064, 21489)
    assert (v["reflns_shell.outer.number_measured_all"], v["reflns_shell.outer.number_unique_obs"]) == (12317, 1310)
    assert (v["symmetry.space_group_name_H-M"], v["symmetry.Int_Tables_number"]) == ("P 43 21 2", 96)
    assert (v["cell.length_a"], v["cell.length_c"], v["cell.angle_gamma"]) == (78.934, 37.051, 90.0)
    assert v["diffrn_radiation_wavelength.wavelength"] == 0.9795
    assert (v["mmcat_collection.first_image_number"], v["mmcat_collection.number_of_images"]) == (1, 1800)
    assert v["mmcat_collection.file_template"] == "lyso2_1_####.cbf"
    assert any("Rmerge(I+/-)" in n for n in parsed.notes)


def test_cell_with_standard_uncertainties(tmp_path, onto):
    text = FIXTURE.read_text().replace("Unit cell:\n 78.934  78.934  37.051\n",
                                       "Unit cell (with estimated std devs):\n78.9341(9) 78.9341(9) 37.0512(4)\n")
    p = tmp_path / "xia2.txt"
    p.write_text(text)
    v, _ = values_of(ADAPTER.parse(p), onto)
    assert (v["cell.length_a"], v["cell.length_c"]) == (78.9341, 37.0512)


def test_detect(corpus_file):
    for p in (corpus_file(FAILED), FIXTURE):
        head = p.read_bytes()[:8192]
        assert ADAPTER.detect(head, p.name)
        assert not SUMMARY.detect(head, p.name)
    for rel in OTHERS:
        q = corpus_file(rel)
        assert not ADAPTER.detect(q.read_bytes()[:8192], q.name), rel


def test_summary_and_txt_are_never_both_claimed(corpus_file):
    for p in (corpus_file(FAILED), corpus_file(SUMMARY_FILE), FIXTURE):
        head = p.read_bytes()[:8192]
        assert ADAPTER.detect(head, p.name) + SUMMARY.detect(head, p.name) == 1


def test_detect_never_raises():
    rng = random.Random(11)
    for _ in range(300):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
        assert ADAPTER.detect(blob, "xia2.txt") in (True, False)


@pytest.mark.parametrize("seed", range(5))
def test_fuzz(corpus_file, onto, tmp_path, seed):
    sources = [corpus_file(FAILED).read_bytes(), FIXTURE.read_bytes()]
    for k, data in enumerate(sources):
        fuzz_adapter(ADAPTER, data, tmp_path / "m.txt", onto, seeds=[seed + 10 * k])


def test_wrong_kind(corpus_file):
    for rel in OTHERS[:4]:
        with pytest.raises(ParseError):
            ADAPTER.parse(corpus_file(rel))


def test_truncated(corpus_file, tmp_path):
    p = tmp_path / "xia2.txt"
    for data in (corpus_file(FAILED).read_bytes(), FIXTURE.read_bytes()):
        for cut in (len(data) // 2, len(data) - 5, data.index(b"Status:")):
            p.write_bytes(data[:cut])
            with pytest.raises(ParseError) as exc:
                ADAPTER.parse(p)
            assert exc.value.path == str(p) and exc.value.line is not None
