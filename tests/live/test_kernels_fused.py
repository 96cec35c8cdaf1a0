"""The one-sweep analyse_frame against the separate reference kernels on random frames."""

from __future__ import annotations

import numpy as np
import pytest

from mxcat.live.kernels import SeriesConstants, frame_statistics, radial_profile, sentinel_for
from mxcat.live.kernels.fused import Workspace, analyse_frame
from mxcat.live.kernels.spots import find_spots_reference


def random_frame(dtype, shape=(97, 131), seed=0, big=False):
    rng = np.random.default_rng(seed)
    lam = np.full(shape, 2.0)
    img = rng.poisson(lam).astype(np.float64)
    ys, xs = rng.integers(2, shape[0] - 2, 25), rng.integers(2, shape[1] - 2, 25)
    for y, x in zip(ys, xs, strict=False):
        img[y - 1:y + 2, x - 1:x + 2] += rng.integers(10, 200)
    if big:
        img[5, 7] = 2.0**27
    if np.dtype(dtype).kind == "f":
        img = img + rng.random(shape) * 0.5
    img = img.astype(dtype)
    sent = sentinel_for(dtype)
    img[40:43, :] = sent
    img[:, 60] = sent
    if np.dtype(dtype).kind == "f":
        img[10, 10] = np.nan
    return img


def compare(img, c, **kw):
    ws = Workspace()
    for _ in range(2):  # the second call reuses the workspace
        spots, st, prof = analyse_frame(img, constants=c, workspace=ws, saturation_value=150, **kw)
        s0 = find_spots_reference(img, constants=c, **kw)
        st0 = frame_statistics(img, spots=s0, constants=c, saturation_value=150)
        p0 = radial_profile(img, constants=c)
        assert s0.n > 5
        for k, v in vars(s0).items():
            np.testing.assert_array_equal(getattr(spots, k), v, err_msg=k)
        for k, v in vars(st0).items():
            np.testing.assert_array_equal(np.asarray(getattr(st, k)), np.asarray(v), err_msg=k)
        np.testing.assert_array_equal(prof.n_pixels, p0.n_pixels)
        exact = np.dtype(img.dtype).kind in "iu" and c.radial_weight is None
        if exact:
            np.testing.assert_array_equal(prof.sums, p0.sums)
        else:
            np.testing.assert_allclose(prof.sums, p0.sums, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.float32])
@pytest.mark.parametrize("corrected", [False, True])
def test_fused_equals_separate_with_geometry(dtype, corrected):
    kw = dict(polarisation_factor=0.99, solid_angle=True) if corrected else {}
    mask = np.zeros((97, 131), np.uint8)
    mask[3:6, 20:30] = 1
    c = SeriesConstants.build(shape=(97, 131), beam_centre_x=60.3, beam_centre_y=45.1, pixel_size_x=172e-6,
                              pixel_size_y=172e-6, distance=0.03, wavelength=1.0, n_bins=40, mask=mask, **kw)
    for seed in range(3):
        compare(random_frame(dtype, seed=seed), c)


@pytest.mark.parametrize("dtype", [np.uint32, np.float32])
def test_fused_equals_separate_without_geometry(dtype):
    c = SeriesConstants.build_without_geometry(shape=(97, 131), n_bins=17)
    compare(random_frame(dtype, seed=5), c)
    compare(random_frame(dtype, seed=6), c, kernel=2, sigma_strong=2.5, global_threshold=3.0, min_spot_size=2)


def test_fused_large_values_fall_back_to_float64():
    c = SeriesConstants.build_without_geometry(shape=(97, 131), n_bins=17)
    compare(random_frame(np.uint32, seed=7, big=True), c)


def test_more_strong_pixels_than_the_buffers_hold():
    """The workspace starts with room for 4096 runs and 16384 strong pixels; a frame with more is
    analysed again with larger buffers and gives the reference answer."""
    shape = (600, 620)
    c = SeriesConstants.build_without_geometry(shape=shape, n_bins=20)
    img = np.random.default_rng(3).poisson(2.0, shape).astype(np.uint16)
    kw = dict(sigma_background=0.5, sigma_strong=0.5, min_spot_size=1)
    ws = Workspace()
    spots = analyse_frame(img, constants=c, workspace=ws, **kw)[0]
    ref = find_spots_reference(img, constants=c, **kw)
    assert ref.n_strong_pixels > 16384 and len(ws.runs[0]) > 4096
    for k, v in vars(ref).items():
        np.testing.assert_array_equal(getattr(spots, k), v, err_msg=k)
