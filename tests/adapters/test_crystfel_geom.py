"""CrystFEL geometry files: read_geometry on the four corpus detectors, the adapter's values, detection, fuzzing."""

from __future__ import annotations

import random

import pytest

from mxcat.adapters.crystfel_geom import ADAPTER, GeometryError, parse_geometry_text, read_geometry
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

GEOMS = {
    "cspad": "crystfel/cspad-cxiformat.geom",
    "eiger": "crystfel/eiger16m-binning2-nativefiles.geom",
    "jungfrau": "crystfel/jungfrau16m-swissfel.geom",
    "pilatus": "crystfel/pilatus.geom",
}
CELL = "crystfel/cell-example.cell"
STREAM = "crystfel/crystfel-0.9.1_lcls-cspad_xgandalf_test.stream"
OTHERS = [CELL, STREAM, "live_analysis/dozor-2.0.2_esrf.log", "xds/XDS_ASCII_header_xds-2020_esrf.HKL",
          "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat", "dials/dials_insulin_scaled.expt"]


def test_eiger(corpus_file, onto):
    path = corpus_file(GEOMS["eiger"])
    g = read_geometry(path)
    assert [p.name for p in g.panels] == ["panel0"]
    p = g.panels[0]
    assert (p.min_fs, p.max_fs, p.min_ss, p.max_ss, p.width, p.height) == (0, 2069, 0, 2166, 2070, 2167)
    assert (p.corner_x, p.corner_y, p.fs, p.ss) == (-1000.0, -1000.0, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    assert (p.res, p.clen, p.coffset, p.adu_per_photon, p.data) == (13333.3, 0.1, 0.0, 1.0, "/entry/data/data")
    assert g.dims == {0: "%", 1: "ss", 2: "fs"} and g.photon_energy == 22000.0
    assert [b.name for b in g.bad_regions] == ["bad_v0", "bad_h0", "bad_h1", "bad_h2"]
    assert all(b.in_fsss for b in g.bad_regions) and (g.bad_regions[1].min_ss, g.bad_regions[1].max_ss) == (514, 550)
    assert g.mask_file is None  # commented out in the file
    v, _ = values_of(ADAPTER.parse(path), onto)
    assert v == {
        "mmcat_collection.detector_distance": 100.0,
        "mmcat_collection.photon_energy": 22.0,
        "mmcat_detector.pixel_size_x": 75.0,
        "mmcat_detector.pixel_size_y": 75.0,
        "mmcat_detector.size_fast": 2070,
        "mmcat_detector.size_slow": 2167,
        "mmcat_collection.image_container_path": "/entry/data/data",
    }


def test_jungfrau(corpus_file, onto):
    path = corpus_file(GEOMS["jungfrau"])
    g = read_geometry(path)
    assert len(g.panels) == 32 and g.panels[0].name == "m0" and g.panels[-1].name == "m31"
    m0 = g.panels[0]
    assert (m0.max_fs, m0.max_ss, m0.corner_x, m0.corner_y) == (1029, 513, 2147.07110898, 1131.30172146)
    assert m0.fs == (0.000342, -0.999931, 0.0) and m0.ss == (-0.998976, -0.00005, 0.0)
    assert (m0.clen, m0.coffset) == (pytest.approx(0.0953), -0.000085)  # clen = 95.3 mm, per-panel coffset
    assert g.photon_energy == 4570.0 and (g.mask_file, g.mask, g.mask_good, g.mask_bad) == ("run47.JF06T32V01.mask.h5", "/mask", 1, 0)
    assert [(b.name, b.panel) for b in g.bad_regions][0] == ("bad_bs_1", "m15")
    assert g.camera_length() == pytest.approx(0.095215)
    parsed = ADAPTER.parse(path)
    v, _ = values_of(parsed, onto)
    assert v["mmcat_collection.detector_distance"] == pytest.approx(95.215)
    assert v["mmcat_collection.photon_energy"] == pytest.approx(4.57)
    assert v["mmcat_detector.pixel_size_x"] == 75.0 and "mmcat_detector.size_fast" not in v
    assert "32 panel(s), 4 bad region(s)" in parsed.notes


def test_cspad_with_hdf5_paths(corpus_file, onto):
    path = corpus_file(GEOMS["cspad"])
    g = read_geometry(path)
    assert len(g.panels) == 64 and g.panels[1].name == "q0a1"
    assert (g.panels[1].min_fs, g.panels[1].corner_y, g.panels[1].fs) == (194, 147.126, (0.004806, 0.999989, 0.0))
    assert g.clen == "/LCLS/detector_1/EncoderValue" and g.photon_energy == "/LCLS/photon_energy_eV"
    assert (g.coffset, g.adu_per_eV, g.res, g.mask_bad) == (0.573224, 0.00338, 9090.91, 0xFFFF)
    assert g.rigid_groups["q0"] == ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"]
    assert g.camera_length() is None
    parsed = ADAPTER.parse(path)
    v, _ = values_of(parsed, onto)
    assert "mmcat_collection.detector_distance" not in v and "mmcat_collection.photon_energy" not in v
    assert v["mmcat_detector.pixel_size_x"] == 110.0
    assert v["mmcat_collection.image_container_path"] == "/entry_1/data_1/data"
    assert any("/LCLS/detector_1/EncoderValue" in n for n in parsed.notes)
    assert any("/LCLS/photon_energy_eV" in n for n in parsed.notes)


def test_pilatus(corpus_file, onto):
    path = corpus_file(GEOMS["pilatus"])
    g = read_geometry(path)
    assert [p.name for p in g.panels] == ["0"] and len(g.bad_regions) == 16
    beamstop = g.bad_regions[0]
    assert (beamstop.name, beamstop.in_fsss, beamstop.min_x, beamstop.max_y) == ("bad_beamstop", False, -2000.0, 100.0)
    v, _ = values_of(ADAPTER.parse(path), onto)
    assert v["mmcat_collection.photon_energy"] == 9.8
    assert v["mmcat_detector.pixel_size_x"] == 171.999  # res 5814 px/m
    assert (v["mmcat_detector.size_fast"], v["mmcat_detector.size_slow"]) == (2463, 2527)
    assert "mmcat_collection.detector_distance" not in v


def test_units_and_directions():
    g = parse_geometry_text("photon_energy = 9.8 keV\nclen = 120 mm\ncoffset = 0.001\nres = 5000\n"
                            "p/min_fs = 0\np/max_fs = 9\np/min_ss = 0\np/max_ss = 9\n"
                            "p/corner_x = -5\np/corner_y = -5\np/fs = -y\np/ss = +0.5x +0.5y -0.1z\n")
    assert g.photon_energy == 9800.0 and g.camera_length() == pytest.approx(0.121)
    assert g.panels[0].fs == (0.0, -1.0, 0.0) and g.panels[0].ss == (0.5, 0.5, -0.1)
    for bad in ("p/min_fs = 0\n", "res = 5000\nq/min_fs = 0\nq/max_fs = 1\n", "clen = 1 furlong\n", "just words\n"):
        with pytest.raises(GeometryError):
            parse_geometry_text(bad)


def test_detect(corpus_file):
    for rel in GEOMS.values():
        p = corpus_file(rel)
        assert ADAPTER.detect(p.read_bytes()[:8192], p.name), rel
    for rel in OTHERS:
        q = corpus_file(rel)
        assert not ADAPTER.detect(q.read_bytes()[:8192], q.name), rel


def test_detect_never_raises():
    rng = random.Random(19)
    for _ in range(300):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
        assert ADAPTER.detect(blob, "x.geom") in (True, False)


@pytest.mark.parametrize("name", sorted(GEOMS))
def test_fuzz(corpus_file, onto, tmp_path, name):
    fuzz_adapter(ADAPTER, corpus_file(GEOMS[name]).read_bytes(), tmp_path / "m.geom", onto, seeds=range(3), nonempty=True)


def test_wrong_kind(corpus_file):
    for rel in (CELL, "live_analysis/dozor-2.0.2_esrf.log", "dials/dials_insulin_scaled.expt"):
        with pytest.raises(ParseError):
            ADAPTER.parse(corpus_file(rel))


def test_truncated(corpus_file, tmp_path):
    data = corpus_file(GEOMS["eiger"]).read_bytes()
    p = tmp_path / "cut.geom"
    for cut in (len(data) - 30, data.index(b"panel0/corner_x")):
        p.write_bytes(data[:cut])
        with pytest.raises(ParseError, match="panel0") as exc:
            ADAPTER.parse(p)
        assert exc.value.path == str(p) and exc.value.line is not None
