"""xia2-summary.dat: hand-checked values of the corpus file, a MAD layout, detection, fuzzing, damaged files."""

from __future__ import annotations

import random

import pytest

from mxcat.adapters.xia2_summary import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

REAL = "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat"
OTHERS = [
    "xia2/xia2-0.3.6.3_dls-i04-1_indexing-error_xia2.txt",
    "xdsapp/xdsapp_results_maxiv-fragmax_C2.txt",
    "dials/dials_insulin_scaled.expt",
    "live_analysis/dozor-2.0.2_esrf.log",
    "crystfel/pilatus.geom",
    "crystfel/cell-example.cell",
    "aimless/aimless-0.7.2_soleil_splTsm_2.SUMM.log",
    "xds/XSCALE_xds-2014jan10_dls-i04-1_xia2-3daii.LP",
]

MAD = """Project: mad1
Crystal: semet
Sequence length: 0
Wavelength: PEAK (0.97920)
Sweep: SWEEP1
Files /data/semet/peak_1_####.cbf
Images: 1 to 720
Beam 211.20 217.40 => 211.31 217.52
Distance 300.00 => 299.71
Date: Mon Mar  2 10:15:00 2015
Wavelength: INFL (0.97940)
Sweep: SWEEP2
Files /data/semet/infl_1_####.cbf
Images: 1 to 720
Beam 211.20 217.40 => 211.30 217.49
Distance 300.00 => 299.68
Date: Mon Mar  2 10:41:10 2015
For mad1/semet/PEAK:
High resolution limit                   \t2.10\t9.39\t2.10
Low resolution limit                    \t48.20\t48.20\t2.15
Completeness                            \t99.5\t98.7\t97.9
Multiplicity                            \t7.2\t6.8\t6.9
I/sigma                                 \t15.8\t41.2\t2.2
Rmerge(I)                               \t0.091\t0.041\t0.874
CC half                                 \t0.998\t0.997\t0.702
Anomalous completeness                  \t99.1\t99.0\t97.2
Anomalous multiplicity                  \t3.7\t3.6\t3.5
For mad1/semet/INFL:
High resolution limit                   \t2.12\t9.48\t2.12
Low resolution limit                    \t48.20\t48.20\t2.17
Completeness                            \t99.4\t98.5\t97.6
Multiplicity                            \t7.1\t6.7\t6.8
I/sigma                                 \t14.9\t39.8\t2.0
Rmerge(I)                               \t0.095\t0.043\t0.912
CC half                                 \t0.998\t0.996\t0.655
Anomalous completeness                  \t98.9\t98.8\t96.9
Anomalous multiplicity                  \t3.6\t3.5\t3.4
Cell:  91.210  91.210  112.440  90.000  90.000  120.000
Spacegroup: P 61 2 2
"""


def test_corpus_values(corpus_file, onto):
    parsed = ADAPTER.parse(corpus_file(REAL))
    assert parsed.program == "xia2" and parsed.version is None
    assert [r.label for r in parsed.results] == ["SAD"]
    assert parsed.hints == {"dataset": "BAZ2BA-x828_1"}
    v, tables = values_of(parsed, onto)
    assert tables == {}
    assert v["reflns.d_resolution_high"] == 1.9
    assert v["reflns.d_resolution_low"] == 42.66
    assert v["reflns_shell.inner.d_res_high"] == 8.5
    assert v["reflns_shell.outer.d_res_low"] == 1.95
    assert v["reflns_shell.outer.d_res_high"] == 1.9
    assert (v["reflns.percent_possible_obs"], v["reflns_shell.inner.percent_possible_obs"],
            v["reflns_shell.outer.percent_possible_obs"]) == (99.9, 99.2, 99.9)
    assert (v["reflns.pdbx_redundancy"], v["reflns_shell.outer.pdbx_redundancy"]) == (6.7, 7.0)
    assert (v["reflns.pdbx_netI_over_sigmaI"], v["reflns_shell.outer.pdbx_netI_over_sigmaI_obs"]) == (19.3, 2.6)
    assert (v["reflns.pdbx_Rmerge_I_obs"], v["reflns_shell.outer.Rmerge_I_obs"]) == (0.048, 0.648)
    assert (v["reflns.pdbx_percent_possible_anomalous"], v["reflns_shell.inner.pdbx_percent_possible_anomalous"]) == (99.4, 100.0)
    assert (v["reflns.pdbx_redundancy_anomalous"], v["reflns_shell.outer.pdbx_redundancy_anomalous"]) == (3.4, 3.5)
    assert "reflns.pdbx_CC_half" not in v  # this 2014 summary has no CC half row
    assert v["symmetry.space_group_name_H-M"] == "C 2 2 21"
    assert v["symmetry.Int_Tables_number"] == 20
    assert [v[f"cell.{k}"] for k in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")] == \
        [83.09, 96.79, 57.95, 90.0, 90.0, 90.0]
    assert v["diffrn_radiation_wavelength.wavelength"] == 0.92
    assert v["mmcat_collection.first_image_number"] == 1
    assert v["mmcat_collection.number_of_images"] == 1800
    assert v["mmcat_collection.file_template"] == "BAZ2BA-x828_1_####.cbf"
    assert v["mmcat_collection.directory"] == "/dls/i04-1/data/2014/nt5073-16/BAZ2BA/BAZ2BA-x828"
    assert (v["mmcat_collection.detector_distance"], v["mmcat_integration.refined_detector_distance"]) == (189.45, 189.2)
    assert v["mmcat_collection.start_time"] == "2014-05-15T03:28:10"
    assert v["mmcat_processing.pipeline"] == "xia2"


def test_several_wavelengths_give_one_result_each(tmp_path, onto):
    p = tmp_path / "xia2-summary.dat"
    p.write_text(MAD)
    parsed = ADAPTER.parse(p)
    assert [r.label for r in parsed.results] == ["PEAK", "INFL"]
    peak, _ = values_of(parsed, onto, "PEAK")
    infl, _ = values_of(parsed, onto, "INFL")
    assert (peak["diffrn_radiation_wavelength.wavelength"], infl["diffrn_radiation_wavelength.wavelength"]) == (0.9792, 0.9794)
    assert (peak["reflns.d_resolution_high"], infl["reflns.d_resolution_high"]) == (2.1, 2.12)
    assert (peak["reflns_shell.outer.pdbx_CC_half"], infl["reflns_shell.outer.pdbx_CC_half"]) == (0.702, 0.655)
    assert peak["symmetry.space_group_name_H-M"] == infl["symmetry.space_group_name_H-M"] == "P 61 2 2"
    assert infl["cell.angle_gamma"] == 120.0
    assert (peak["mmcat_collection.file_template"], infl["mmcat_collection.file_template"]) == ("peak_1_####.cbf", "infl_1_####.cbf")
    assert infl["mmcat_integration.refined_detector_distance"] == 299.68
    assert parsed.hints == {}  # two sweeps with different prefixes: no single dataset name


def test_detect(corpus_file):
    p = corpus_file(REAL)
    assert ADAPTER.detect(p.read_bytes()[:8192], p.name)
    assert ADAPTER.detect(MAD.encode(), "anything.dat")
    for rel in OTHERS:
        q = corpus_file(rel)
        assert not ADAPTER.detect(q.read_bytes()[:8192], q.name), rel


def test_detect_never_raises():
    rng = random.Random(7)
    for _ in range(300):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
        assert ADAPTER.detect(b"Project:" + blob, "xia2-summary.dat") in (True, False)
        assert ADAPTER.detect(blob, "x") is False


@pytest.mark.parametrize("seed", range(6))
def test_fuzz(corpus_file, onto, tmp_path, seed):
    fuzz_adapter(ADAPTER, corpus_file(REAL).read_bytes(), tmp_path / "m.dat", onto, seeds=[seed])
    fuzz_adapter(ADAPTER, MAD.encode(), tmp_path / "m.dat", onto, seeds=[seed + 100])


def test_wrong_kind(corpus_file):
    for rel in OTHERS[:4]:
        with pytest.raises(ParseError):
            ADAPTER.parse(corpus_file(rel))


def test_truncated(corpus_file, tmp_path):
    data = corpus_file(REAL).read_bytes()
    p = tmp_path / "xia2-summary.dat"
    for cut in (len(data) // 2, data.index(b"Cell:"), len(data) - 3):
        p.write_bytes(data[:cut])
        with pytest.raises(ParseError) as exc:
            ADAPTER.parse(p)
        assert exc.value.path == str(p) and exc.value.line is not None


def test_impossible_values_are_parse_errors(tmp_path):
    p = tmp_path / "xia2-summary.dat"
    p.write_text(MAD.replace("\t99.5\t98.7\t97.9", "\t199.5\t98.7\t97.9"))
    with pytest.raises(ParseError, match="Completeness") as exc:
        ADAPTER.parse(p)
    assert exc.value.line == 21
    p.write_text(MAD.replace("Spacegroup: P 61 2 2\n", ""))
    with pytest.raises(ParseError, match="Spacegroup"):
        ADAPTER.parse(p)


def test_values_mmcat_cannot_hold_are_skipped_with_a_note(tmp_path, onto):
    p = tmp_path / "xia2-summary.dat"
    p.write_text(MAD.replace("\t0.998\t0.997\t0.702", "\t0.998\t0.997\t-0.012"))
    parsed = ADAPTER.parse(p)
    v, _ = values_of(parsed, onto, "PEAK")
    assert "reflns_shell.outer.pdbx_CC_half" not in v and v["reflns.pdbx_CC_half"] == 0.998
    assert ("reflns_shell.outer.pdbx_CC_half", -0.012) in [(k, v) for k, v, _ in parsed.dropped]
    assert any("-0.012" in n for n in parsed.notes)
