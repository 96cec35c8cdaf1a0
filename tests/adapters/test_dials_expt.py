"""DIALS .expt: hand-checked models of the corpus file, several experiments, detection, fuzzing, damaged files."""

from __future__ import annotations

import copy
import json
import math
import random

import pytest

from mxcat.adapters.dials_expt import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

REAL = "dials/dials_insulin_scaled.expt"
OTHERS = [
    "ispyb_xml/edna2-maxiv-biomax_autoPROC-20230222_ispyb-results.json",
    "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat",
    "xdsapp/xdsapp_results_maxiv-fragmax_C2.txt",
    "crystfel/crystfel-0.9.1_lcls-cspad_xgandalf_test.stream",
    "live_analysis/dozor-2.0.2_esrf.log",
    "crystfel/cspad-cxiformat.geom",
]


def _doc(corpus_file) -> dict:
    return json.loads(corpus_file(REAL).read_text())


def test_corpus_values(corpus_file, onto):
    parsed = ADAPTER.parse(corpus_file(REAL))
    assert parsed.program == "DIALS" and parsed.version is None
    assert len(parsed.results) == 1 and parsed.results[0].level == "processing" and parsed.results[0].label is None
    assert parsed.hints == {"dataset": "insulin_1"}
    v, _ = values_of(parsed, onto)
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.979)
    assert v["mmcat_collection.polarisation_fraction"] == 0.999
    assert v["mmcat_detector.pixel_size_x"] == pytest.approx(81.6) and v["mmcat_detector.pixel_size_y"] == pytest.approx(81.6)
    assert (v["mmcat_detector.size_fast"], v["mmcat_detector.size_slow"]) == (2304, 2304)
    assert v["mmcat_detector.saturation_value"] == 65535
    assert "mmcat_detector.sensor_material" not in v and "mmcat_detector.sensor_thickness" not in v  # dxtbx placeholders
    # distance: origin projected on the panel normal fast x slow, worked out by hand from the panel vectors
    fast = (0.9998924147486397, 0.014666078884234206, -0.00025506527796990454)
    slow = (0.014667023415894728, -0.9998835634698441, 0.004211641837102909)
    origin = (-95.5195450879084, 93.01794404914365, -159.08637240465785)
    n = (fast[1] * slow[2] - fast[2] * slow[1], fast[2] * slow[0] - fast[0] * slow[2], fast[0] * slow[1] - fast[1] * slow[0])
    distance = abs(sum(o * c for o, c in zip(origin, n, strict=True))) / math.sqrt(sum(c * c for c in n))
    assert v["mmcat_collection.detector_distance"] == pytest.approx(distance, abs=1e-3)
    assert v["mmcat_collection.detector_distance"] == pytest.approx(158.711, abs=1e-3)
    # the beam (along -direction) meets the panel near its middle: 2304 px x 0.0816 mm = 188 mm
    assert v["mmcat_collection.beam_centre_x"] == pytest.approx(94.51, abs=0.01)
    assert v["mmcat_collection.beam_centre_y"] == pytest.approx(94.42, abs=0.01)
    assert v["mmcat_collection.beam_centre_x_px"] == pytest.approx(94.5131 / 0.0816, abs=0.01)
    assert (v["mmcat_collection.first_image_number"], v["mmcat_collection.number_of_images"]) == (1, 45)
    assert (v["mmcat_collection.oscillation_start"], v["mmcat_collection.oscillation_width"]) == (0.0, 1.0)
    assert v["mmcat_collection.oscillation_end"] == 45.0
    assert v["mmcat_collection.exposure_time"] == 30.0
    assert v["mmcat_collection.start_time"] == "2006-08-31T13:52:46+00:00"  # epoch 1157032366
    assert v["mmcat_collection.file_template"] == "insulin_1_###.img"
    assert (v["mmcat_integration.start_image_number"], v["mmcat_integration.end_image_number"]) == (1, 45)
    assert (v["mmcat_integration.rotation_axis_x"], v["mmcat_integration.rotation_axis_y"]) == (1.0, 0.0)
    # cubic insulin: |a| = |b| = |c| = 78.09 A at right angles; Hall ' I 2 2 3' is I 2 3 (197)
    a = (-15.076704033848404, 44.41699505041033, -62.435712081397725)
    assert v["cell.length_a"] == pytest.approx(math.sqrt(sum(x * x for x in a)), abs=1e-4)
    assert v["cell.length_a"] == pytest.approx(78.0922, abs=1e-4)
    assert v["cell.length_b"] == pytest.approx(78.0922, abs=1e-4) and v["cell.length_c"] == pytest.approx(78.0922, abs=1e-4)
    for angle in ("alpha", "beta", "gamma"):
        assert v[f"cell.angle_{angle}"] == pytest.approx(90.0, abs=1e-3)
    assert (v["symmetry.space_group_name_H-M"], v["symmetry.Int_Tables_number"]) == ("I 2 3", 197)


def test_several_experiments_and_no_crystal(corpus_file, tmp_path, onto):
    doc = _doc(corpus_file)
    doc["experiment"].append(dict(doc["experiment"][0], identifier="second", crystal=1))
    second = copy.deepcopy(doc["crystal"][0])
    second["real_space_a"] = [60.0, 0.0, 0.0]
    second["real_space_b"] = [0.0, 70.0, 0.0]
    second["real_space_c"] = [0.0, 0.0, 80.0]
    second["space_group_hall_symbol"] = " P 2 2ab"
    doc["crystal"].append(second)
    doc["experiment"].append({k: v for k, v in doc["experiment"][0].items() if k != "crystal"})
    p = tmp_path / "two.expt"
    p.write_text(json.dumps(doc))
    parsed = ADAPTER.parse(p)
    assert [r.label for r in parsed.results] == ["experiment_0", "experiment_1", "experiment_2"]
    assert [r.level for r in parsed.results] == ["processing", "processing", "dataset"]
    v1, _ = values_of(parsed, onto, "experiment_1")
    assert (v1["cell.length_a"], v1["cell.length_b"], v1["cell.length_c"]) == (60.0, 70.0, 80.0)
    assert (v1["symmetry.space_group_name_H-M"], v1["symmetry.Int_Tables_number"]) == ("P 21 21 2", 18)
    v2, _ = values_of(parsed, onto, "experiment_2")
    assert "cell.length_a" not in v2 and "mmcat_integration.start_image_number" not in v2
    assert v2["mmcat_collection.number_of_images"] == 45


def test_multi_panel_detector(corpus_file, tmp_path, onto):
    doc = _doc(corpus_file)
    panel = doc["detector"][0]["panels"][0]
    shifted = [o + 200.0 * f for o, f in zip(panel["origin"], panel["fast_axis"], strict=True)]  # in the same plane
    doc["detector"][0]["panels"].append(dict(panel, origin=shifted))
    p = tmp_path / "two_panels.expt"
    p.write_text(json.dumps(doc))
    parsed = ADAPTER.parse(p)
    v, _ = values_of(parsed, onto)
    assert "mmcat_detector.size_fast" not in v and "mmcat_collection.beam_centre_x" not in v
    assert v["mmcat_collection.detector_distance"] == pytest.approx(158.711, abs=1e-3)  # coplanar panels
    assert any("2 panels" in n for n in parsed.notes)


def test_detect(corpus_file):
    p = corpus_file(REAL)
    assert ADAPTER.detect(p.read_bytes()[:8192], p.name)
    assert ADAPTER.detect(b'{"__id__": "ExperimentList", "experiment": []}', "x.json")
    for rel in OTHERS:
        q = corpus_file(rel)
        assert not ADAPTER.detect(q.read_bytes()[:8192], q.name), rel


def test_detect_never_raises():
    rng = random.Random(5)
    for _ in range(300):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
        assert ADAPTER.detect(b"{" + blob, "x.expt") in (True, False)


@pytest.mark.parametrize("seed", range(6))
def test_fuzz(corpus_file, onto, tmp_path, seed):
    data = corpus_file(REAL).read_bytes()
    fuzz_adapter(ADAPTER, data, tmp_path / "m.expt", onto, seeds=[seed])


def test_structural_damage(corpus_file, tmp_path):
    base = _doc(corpus_file)
    damages = [
        lambda d: d["experiment"][0].update(crystal=3),
        lambda d: d["beam"][0].update(wavelength=-1.0),
        lambda d: d["beam"][0].update(wavelength="0.98"),
        lambda d: d["crystal"][0].update(space_group_hall_symbol="not a symbol"),
        lambda d: d["crystal"][0].update(real_space_c=[0.0, 0.0, 0.0]),
        lambda d: d["scan"][0].update(image_range=[45, 1]),
        lambda d: d["detector"][0]["panels"][0].update(fast_axis=[0, 0]),
        lambda d: d.update(experiment=[]),
        lambda d: d.update({"__id__": "Something"}),
    ]
    p = tmp_path / "bad.expt"
    for damage in damages:
        doc = copy.deepcopy(base)
        damage(doc)
        p.write_text(json.dumps(doc))
        with pytest.raises(ParseError) as exc:
            ADAPTER.parse(p)
        assert exc.value.path == str(p)


def test_wrong_kind(corpus_file):
    for rel in OTHERS[:3]:
        with pytest.raises(ParseError):
            ADAPTER.parse(corpus_file(rel))


def test_truncated(corpus_file, tmp_path):
    data = corpus_file(REAL).read_bytes()
    p = tmp_path / "scaled.expt"
    for cut in (len(data) // 2, len(data) - 1, 100):
        p.write_bytes(data[:cut])
        with pytest.raises(ParseError) as exc:
            ADAPTER.parse(p)
        assert exc.value.path == str(p) and exc.value.line is not None
