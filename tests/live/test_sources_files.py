"""File replay sources over real DECTRIS/NXmx HDF5 files and CBF series (written and corpus)."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from mxcat.live.frames import Frame, SeriesEnd, SeriesInfo
from mxcat.live.sources.cbf import write_cbf
from mxcat.live.sources.files import (
    CbfSource,
    Hdf5Source,
    MissingDataFile,
    SourceFileError,
    geometry_from_crystfel,
)


def _split(items):
    items = list(items)
    assert isinstance(items[0], SeriesInfo) and isinstance(items[-1], SeriesEnd)
    frames = items[1:-1]
    assert all(isinstance(f, Frame) for f in frames)
    return items[0], frames, items[-1]


def test_eiger4m_diffraction_frame(corpus: Path, caplog) -> None:
    src = Hdf5Source(corpus / "stream" / "hdf5plugin_eiger-4m_bslz4_uint32_diffraction_1frame.h5")
    with caplog.at_level(logging.WARNING):
        info, frames, end = _split(src)
    assert info.shape == (2167, 2070) and info.dtype == "<u4" and info.n_images == 1
    assert not info.has_geometry and "no complete geometry" in caplog.text
    assert len(frames) == 1 and end.n_received == 1 and frames[0].index == 1
    d = frames[0].data
    assert d.dtype == np.uint32 and d.shape == (2167, 2070)
    assert int((d == 0xFFFFFFFF).sum()) == 251_302
    assert int(d[d != 0xFFFFFFFF].max()) == 1_208_081


def test_ansto_20_frames_one_at_a_time(corpus: Path) -> None:
    src = Hdf5Source(
        corpus / "stream" / "ansto-simplonapi_eiger2-1m_dark_20frames_ANSTOtest_303_data_000001.h5"
    )
    it = iter(src)
    info = next(it)
    assert info.shape == (1062, 1028) and info.n_images == 20
    first = next(it)
    assert isinstance(first, Frame) and first.data.shape == (1062, 1028) and first.index == 1
    assert int((first.data == 0xFFFFFFFF).sum()) == 39_065
    rest = list(it)
    frames = [first] + rest[:-1]
    assert [f.index for f in frames] == list(range(1, 21))
    assert rest[-1].n_received == 20
    assert max(int(f.data[f.data != 0xFFFFFFFF].max()) for f in frames) <= 12


def test_uint16_data_file(corpus: Path) -> None:
    info, frames, _ = _split(
        Hdf5Source(corpus / "stream" / "dectris-h5testfiles_eiger1-1m_testmode10_bslz4_data_000001.h5")
    )
    assert info.dtype == "<u2" and len(frames) == 2 and frames[0].data.shape == (1065, 1030)
    assert int((frames[0].data == 0xFFFF).sum()) == 38_164


def test_dls_master_geometry_without_data(corpus: Path) -> None:
    src = Hdf5Source(corpus / "detector" / "dls-i03-eiger16m_xrc_209_master.h5")
    info = src.series_info()
    assert info.series_id == "dls-i03-eiger16m_xrc_209"
    assert info.has_geometry
    assert info.distance == pytest.approx(0.391228, abs=1e-6)
    assert (info.beam_centre_x, info.beam_centre_y) == pytest.approx((1005.4534, 1050.7524), abs=1e-4)
    assert info.wavelength == pytest.approx(0.97625, abs=1e-5)
    assert info.pixel_size_x == 75e-6 and info.saturation_value == 46051
    assert info.shape == (2162, 2068) and info.dtype == "<u2" and info.n_images == 240
    with pytest.raises(MissingDataFile, match="xrc_209_000001.h5") as err:
        list(src)
    assert err.value.missing.endswith("xrc_209_000001.h5")


def test_dectris_master_mask_and_external_link(corpus: Path) -> None:
    src = Hdf5Source(corpus / "detector" / "dectris-eiger9m_fw1.6.4_master_semisynthetic.h5")
    info = src.series_info()
    assert info.series_id == "dectris-eiger9m_fw1.6.4_master_semisynthetic"
    assert info.distance == pytest.approx(0.134255) and info.wavelength == pytest.approx(0.98011, abs=1e-5)
    assert info.saturation_value == 12440 and info.bit_depth == 16 and info.omega_increment == 0.5
    assert (
        info.shape == (3269, 3110) and info.pixel_mask is not None and info.pixel_mask.shape == (3269, 3110)
    )
    with pytest.raises(MissingDataFile, match="dectris_eiger_data_000001.h5"):
        list(src)


def test_master_with_data_links(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 100, size=(5, 16, 12)).astype(np.uint32)
    for k, chunk in enumerate((frames[:3], frames[3:])):
        with h5py.File(tmp_path / f"x_data_{k + 1:06d}.h5", "w") as f:
            d = f.create_dataset("entry/data/data", data=chunk, chunks=(1, 16, 12), **hdf5plugin.Bitshuffle())
            d.attrs["image_nr_low"] = 1 + 3 * k
    with h5py.File(tmp_path / "x_master.h5", "w") as f:
        det = f.create_group("entry/instrument/detector")
        det["detector_distance"] = 150.0
        det["detector_distance"].attrs["units"] = "mm"
        det["beam_center_x"], det["beam_center_y"] = 6.0, 8.0
        det["x_pixel_size"], det["y_pixel_size"] = 75e-6, 75e-6
        f["entry/instrument/beam/incident_wavelength"] = 1.0
        f.create_group("entry/instrument/detector/detectorSpecific")["pixel_mask"] = np.zeros(
            (16, 12), np.uint32
        )
        for k in (1, 2):
            f[f"entry/data/data_{k:06d}"] = h5py.ExternalLink(f"x_data_{k:06d}.h5", "entry/data/data")
    info, got, end = _split(Hdf5Source(tmp_path / "x_master.h5", overrides={"wavelength": 0.9}))
    assert info.distance == pytest.approx(0.15) and info.wavelength == 0.9 and info.has_geometry
    assert info.n_images == 5 and [f.index for f in got] == [1, 2, 3, 4, 5]
    assert np.array_equal(np.stack([f.data for f in got]), frames)
    with pytest.raises(SourceFileError, match="unknown overrides"):
        Hdf5Source(tmp_path / "x_master.h5", overrides={"beam_center_x": 1}).series_info()


def test_not_hdf5(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_bytes(b"nope")
    with pytest.raises(SourceFileError, match="HDF5"):
        Hdf5Source(tmp_path / "x.h5").series_info()


def test_crystfel_geometry(corpus: Path) -> None:
    g = geometry_from_crystfel(corpus / "crystfel" / "pilatus.geom", (2527, 2463))
    assert (g["beam_centre_x"], g["beam_centre_y"]) == pytest.approx((1272.37, 1243.8))
    assert g["pixel_size_x"] == pytest.approx(172e-6, rel=1e-3)
    assert g["wavelength"] == pytest.approx(12398.4198 / 9800)
    assert "distance" not in g  # clen is an HDF5 path in this file
    assert g["pixel_mask"][0, 487] == 1 and g["pixel_mask"][0, 486] == 0


def test_cbf_series(tmp_path: Path, caplog) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 50, size=(20, 30)).astype(np.int32)
    a[:, 10] = -1
    a[3, 3] = -2
    h = {
        "pixel_size_x": 172e-6,
        "pixel_size_y": 172e-6,
        "distance": 0.2,
        "wavelength": 1.0,
        "beam_centre_x": 15.0,
        "beam_centre_y": 10.0,
    }
    for i in range(1, 4):
        write_cbf(tmp_path / f"s_{i:04d}.cbf", np.where(a >= 0, a + i, a), h)
    (tmp_path / "s_0004.cbf").write_bytes(b"garbage")
    write_cbf(tmp_path / "s_0005.cbf.gz", a, h)
    with caplog.at_level(logging.WARNING):
        info, frames, end = _split(CbfSource(str(tmp_path / "s_*.cbf*")))
    assert info.series_id == "s" and info.has_geometry and info.n_images == 5
    assert info.pixel_mask[0, 10] == 1 and info.pixel_mask[3, 3] == 2 and info.pixel_mask.sum() == 22
    assert [f.index for f in frames] == [1, 2, 3, 5]
    assert end.n_received == 4 and end.n_malformed == 1 and "s_0004.cbf" in caplog.text


def test_cbf_corpus_series(corpus: Path) -> None:
    det = corpus / "detector"
    info, frames, end = _split(CbfSource([det / "dls-i04_pilatus-6m_minicbf_gridscan_thau_3_2_0001.cbf.bz2"]))
    assert info.has_geometry and info.shape == (2527, 2463) and info.saturation_value == 115897
    assert frames[0].index == 1 and int((info.pixel_mask == 1).sum()) == 2527 * 2463 - 60 * 487 * 195
    info, frames, _ = _split(CbfSource(det / "imgcif_cbflib-0.7.5_fit2d_data.cbf"))
    assert not info.has_geometry and frames[0].data.shape == (236, 263)


def test_cbf_no_match(tmp_path: Path) -> None:
    with pytest.raises(SourceFileError, match="no CBF files"):
        CbfSource(str(tmp_path / "*.cbf"))
