"""Radial profile and spot separations against direct loops."""

from __future__ import annotations

import numpy as np
import pytest

from mxcat.live.kernels import SeriesConstants, radial_profile, spot_separations
from mxcat.live.kernels.separation import nearest_neighbour_distances


@pytest.mark.parametrize("corrected", [False, True])
def test_radial_matches_direct_loop(corrected):
    kw = dict(polarisation_factor=0.99, solid_angle=True) if corrected else {}
    c = SeriesConstants.build(shape=(64, 80), beam_centre_x=30.2, beam_centre_y=35.7, pixel_size_x=172e-6,
                              pixel_size_y=172e-6, distance=0.05, wavelength=1.0, n_bins=20, **kw)
    rng = np.random.default_rng(0)
    img = rng.poisson(5.0, (64, 80)).astype(np.uint16)
    img[10, :] = 65535
    sums = np.zeros(20)
    counts = np.zeros(20, int)
    for j in range(64):
        for i in range(80):
            if img[j, i] == 65535:
                continue
            b = min(int((c.dstar2[j, i] - c.radial_edges[0]) / (c.radial_edges[-1] - c.radial_edges[0]) * 20), 19)
            w = c.radial_weight[j, i] if corrected else 1.0
            sums[b] += img[j, i] * w
            counts[b] += 1
    prof = radial_profile(img, constants=c)
    np.testing.assert_array_equal(prof.n_pixels, counts)
    np.testing.assert_allclose(prof.sums, sums, rtol=1e-6)
    acc = radial_profile(img, constants=c).add(prof)
    assert acc.n_frames == 2
    np.testing.assert_allclose(acc.mean, prof.mean, rtol=1e-12)
    np.testing.assert_allclose(prof.d, 1 / np.sqrt(prof.centres))


def test_radial_geometry_free():
    c = SeriesConstants.build_without_geometry(shape=(64, 80), n_bins=10)
    prof = radial_profile(np.full((64, 80), 3, np.int32), constants=c)
    assert prof.n_pixels.sum() == 64 * 80
    np.testing.assert_allclose(prof.mean[prof.n_pixels > 0], 3.0)
    assert np.isnan(prof.d).all()


@pytest.mark.parametrize("n", [0, 1, 2, 7, 300, 3000])
def test_nearest_neighbours_match_brute_force(n):
    rng = np.random.default_rng(n)
    x = rng.uniform(0, 2000, n)
    y = rng.uniform(0, 1500, n)
    if n > 5:
        x[:5] = x[0]  # duplicates and clusters
        y[:3] = np.array([10.0, 10.0, 13.0])
    sep = spot_separations(x=x, y=y, area_px=3e6)
    if n >= 2:
        d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
        np.fill_diagonal(d, np.inf)
        np.testing.assert_allclose(sep.nn_distance, d.min(axis=1))
    assert sep.counts.sum() == np.count_nonzero(sep.nn_distance < sep.edges[-1])


def test_cell_size_does_not_matter():
    rng = np.random.default_rng(9)
    x, y = rng.uniform(0, 100, 200), rng.uniform(0, 100, 200)
    a = nearest_neighbour_distances(x, y, 1.0)
    np.testing.assert_allclose(a, nearest_neighbour_distances(x, y, 37.0))


def test_multi_lattice_score():
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 2000, 500), rng.uniform(0, 2000, 500)
    single = spot_separations(x=x, y=y, area_px=4e6).multi_lattice_score
    split = spot_separations(x=np.r_[x, x + 3.0], y=np.r_[y, y + 1.0], area_px=4e6).multi_lattice_score
    assert single < 0.05
    assert split > 0.9
