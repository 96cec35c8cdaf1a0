"""Geometry constants and per-frame statistics on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest

from mxcat.live.kernels import ICE_RINGS_D, SeriesConstants, SpotList, find_spots, frame_statistics
from mxcat.live.kernels.geometry import dstar2_of

GEO = dict(beam_centre_x=100.0, beam_centre_y=90.0, pixel_size_x=172e-6, pixel_size_y=172e-6, distance=0.1, wavelength=1.0)


def consts(shape=(200, 220), **kw):
    return SeriesConstants.build(shape=shape, **GEO, **kw)


def test_dstar2_matches_bragg():
    c = consts()
    j, i = 17, 203
    dx, dy = (i + 0.5 - 100) * 172e-6, (j + 0.5 - 90) * 172e-6
    theta = 0.5 * np.arctan(np.hypot(dx, dy) / 0.1)
    assert c.dstar2[j, i] == pytest.approx((2 * np.sin(theta) / 1.0) ** 2, rel=1e-5)
    assert c.radial_bin.min() >= 0 and c.radial_bin.max() == c.n_bins - 1


def position_at_d(d, angle, c):
    """Pixel coordinates at d-spacing d (Å) along azimuth ``angle``."""
    two_theta = 2 * np.arcsin(1.0 / (2 * d))
    r = 0.1 * np.tan(two_theta) / 172e-6
    return 100 + r * np.cos(angle), 90 + r * np.sin(angle)


def make_spots(ds, c):
    ang = np.linspace(0, 2 * np.pi, len(ds), endpoint=False)
    x, y = zip(*(position_at_d(d, a, c) for d, a in zip(ds, ang, strict=False)), strict=False)
    x, y = np.array(x), np.array(y)
    n = len(ds)
    inten = np.full(n, 100.0)
    return SpotList(x=x, y=y, intensity=inten, intensity_net=inten, background=np.zeros(n), n_pixels=np.full(n, 5, np.int32),
                    peak=np.full(n, 30.0), snr=np.full(n, 10.0), dstar2=c.spot_dstar2(x=x, y=y))


def test_spot_counts_ice_and_hit():
    c = consts()
    ds = [8.0, 6.0, 5.0, 4.5, 3.0, 2.5] * 4 + [ICE_RINGS_D[0], ICE_RINGS_D[3], ICE_RINGS_D[4]]
    spots = make_spots(ds, c)
    np.testing.assert_allclose(spots.d, ds, rtol=1e-9)
    frame = np.ones(c.shape, np.uint16)
    st = frame_statistics(frame, spots=spots, constants=c)
    assert st.n_spots_total == 27
    assert st.n_spots_no_ice == 24
    assert st.n_spots_4A == 16
    assert st.total_intensity == pytest.approx(2400.0)
    assert not st.hit
    assert frame_statistics(frame, spots=spots, constants=c, hit_min_spots=24).hit
    # identical intensities: no spot lies strictly below the flat upper envelope, so -1 (as DIALS)
    assert st.estimated_d_min == -1.0
    assert st.d_min_distl_method_1 > 0 and st.d_min_distl_method_2 > 0
    assert 0 <= st.noisiness_method_1 <= 1 and 0 <= st.noisiness_method_2 <= 1
    few = frame_statistics(frame, spots=make_spots([5.0] * 5, c), constants=c)
    assert few.estimated_d_min == -1.0 and few.d_min_distl_method_1 == -1.0


def test_distl_and_estimated_d_min_follow_the_spot_cutoff():
    c = SeriesConstants.build(shape=(2000, 2000), beam_centre_x=1000, beam_centre_y=1000, pixel_size_x=75e-6,
                              pixel_size_y=75e-6, distance=0.1, wavelength=1.0)
    rng = np.random.default_rng(1)
    # uniform in reciprocal volume to d = 2.0 Å, intensities falling with d*^2 (Wilson B ~ 20)
    ds3 = rng.uniform(1 / 30**3, 1 / 2.0**3, 400)
    ds2 = ds3 ** (2 / 3)
    d = 1 / np.sqrt(ds2)
    ang = rng.uniform(0, 2 * np.pi, 400)
    two_theta = 2 * np.arcsin(1.0 / (2 * d))
    r = 0.1 * np.tan(two_theta) / 75e-6
    x, y = 1000 + r * np.cos(ang), 1000 + r * np.sin(ang)
    inten = 2000 * np.exp(-2 * 20 * ds2 / 4) * rng.exponential(1.0, 400) + 20
    sp = SpotList(x=x, y=y, intensity=inten, intensity_net=inten, background=np.zeros(400), n_pixels=np.full(400, 5, np.int32),
                  peak=inten / 5, snr=np.sqrt(inten), dstar2=c.spot_dstar2(x=x, y=y))
    st = frame_statistics(np.ones(c.shape, np.uint16), spots=sp, constants=c)
    for v in (st.estimated_d_min, st.d_min_distl_method_1, st.d_min_distl_method_2):
        assert 1.9 < v < 3.0, st


def test_saturation_background_and_ice_score():
    c = SeriesConstants.build(shape=(512, 512), beam_centre_x=256, beam_centre_y=256, pixel_size_x=172e-6,
                              pixel_size_y=172e-6, distance=0.08, wavelength=1.0)
    rng = np.random.default_rng(5)
    frame = rng.poisson(10.0, c.shape).astype(np.uint32)
    frame[:10, :10] = 1_000_000
    frame[100, :] = np.iinfo(np.uint32).max
    none = find_spots(frame, constants=c)
    st = frame_statistics(frame, spots=none, constants=c, saturation_value=1_000_000)
    n_valid = 512 * 512 - 512
    assert st.n_valid_pixels == n_valid
    assert st.saturated_fraction == pytest.approx(100 / n_valid)
    assert st.background == pytest.approx(10.0, abs=0.5)
    assert abs(st.ice_ring_score) < 0.1
    iced = frame.copy()
    band = (c.ice_band == 4) & (iced != np.iinfo(np.uint32).max)
    iced[band] += rng.poisson(15.0, band.sum()).astype(np.uint32)
    st_ice = frame_statistics(iced, spots=none, constants=c, saturation_value=1_000_000)
    assert st_ice.ice_ring_score > 2.0
    assert int(np.argmax(st_ice.ice_ring_scores)) == 3


def test_geometry_free_statistics():
    c = SeriesConstants.build_without_geometry(shape=(64, 80))
    assert c.beam_centre_x == 40 and c.beam_centre_y == 32 and c.radial_axis == "radius_px"
    frame = np.ones((64, 80), np.uint16)
    frame[10:12, 10:12] = 200
    spots = find_spots(frame, constants=c)
    st = frame_statistics(frame, spots=spots, constants=c, hit_min_spots=1)
    assert st.n_spots_total == st.n_spots_no_ice == 1 and st.hit
    assert st.n_spots_4A is None and st.estimated_d_min is None and st.ice_ring_score is None
    assert np.isnan(spots.dstar2).all()


def test_dstar2_of_is_zero_at_beam():
    assert dstar2_of(x=np.array([100.0]), y=np.array([90.0]), **GEO)[0] == 0.0
