"""The radial (peakfinder8-style) analysis against a plain NumPy/Python statement of its definitions.

Small frames with odd sizes, sentinels, masked pixels, spots, several dtypes, with and without
geometry; the model is checked on both of its paths (histograms and repeated moment passes).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxcat.live.kernels import SeriesConstants, analyse_frame, make_workspace
from mxcat.live.kernels import radial_spots as rs
from mxcat.live.kernels.geometry import sentinel_for


def block_bins(c):
    """Blocks of 2 rows x 4 columns: the bin of the mean coordinate (d*², or radius from the beam
    centre without geometry) of a block's unmasked pixels, summed in row order; −1 when none or
    outside the profile range."""
    ny, nx = c.shape
    edges = c.radial_edges
    lo, hi, nb = float(edges[0]), float(edges[-1]), len(edges) - 1
    out = np.full((-(-ny // 2), -(-nx // 4)), -1)
    for by, bx in np.ndindex(out.shape):
        coords = [float(c.dstar2[j, i]) if c.has_geometry else
                  float(np.hypot(i + 0.5 - c.beam_centre_x, j + 0.5 - c.beam_centre_y))
                  for j in range(2 * by, min(2 * by + 2, ny)) for i in range(4 * bx, min(4 * bx + 4, nx)) if c.ok[j, i]]
        if coords:
            m = 0.0
            for v in coords:
                m += v
            m /= len(coords)
            if lo <= m <= hi:
                out[by, bx] = min(int(np.floor((m - lo) * (nb / (hi - lo)))), nb - 1)
    return out


def reference(frame, c, *, snr_seed=8.0, snr_grow=3.0, min_spot_size=3, max_spot_size=1000, model_step=None, iterations=2,
              saturation=None):
    """Every definition of radial_spots written out plainly."""
    t = rs.BlockTables(c)
    np.testing.assert_array_equal(t.bin, block_bins(c))
    ny, nx = frame.shape
    if model_step is None:  # at least 64 model rows, every 32nd row at most
        model_step = max(1, min(32, ny // 64))
    f = frame.astype(np.float64)
    sent = sentinel_for(frame.dtype)
    valid = (c.ok != 0) & (frame != sent) & (f >= 0) & np.isfinite(f)
    pbin = np.repeat(np.repeat(t.bin, 2, 0), 4, 1)[:ny, :nx].astype(np.int64)  # a pixel's bin: its block's
    nb = t.n_bins
    clip = np.full(nb, np.inf)
    rows = np.zeros_like(valid)
    rows[::model_step] = True
    for _ in range(iterations + 1):
        n = np.zeros(nb)
        s1 = np.zeros(nb)
        s2 = np.zeros(nb)
        for j, i in zip(*np.nonzero(rows & valid & (pbin >= 0)), strict=True):
            b = pbin[j, i]
            if f[j, i] <= clip[b]:
                n[b] += 1
                s1[b] += f[j, i]
                s2[b] += f[j, i] ** 2
        mu = np.zeros(nb)
        sig = np.zeros(nb)
        good = n >= rs.MIN_MODEL_PIXELS
        for b in range(nb):
            if good[b]:
                mu[b] = s1[b] / n[b]
                sd = np.sqrt(max(s2[b] / n[b] - mu[b] ** 2, 0.0))
                sig[b] = max(sd, np.sqrt(max(mu[b], 0.0)), rs.SIGMA_FLOOR)
        if good.any():
            have = np.flatnonzero(good)
            for b in range(nb):
                if not good[b]:
                    d = np.abs(have - b)
                    k = have[np.flatnonzero(d == d.min())[0]]  # nearest; the lower one on a tie
                    mu[b], sig[b] = mu[k], sig[k]
        else:
            sig[:] = rs.SIGMA_FLOOR
        clip = mu + 3.0 * sig
    lo = np.where(pbin >= 0, (mu + snr_grow * sig)[np.maximum(pbin, 0)], np.inf)
    hi = np.where(pbin >= 0, (mu + snr_seed * sig)[np.maximum(pbin, 0)], np.inf)
    strong = valid & (f > lo)
    seed = valid & (f > hi)
    # 8-connected components of strong pixels (plain BFS)
    label = -np.ones((ny, nx), int)
    spots = []
    for j0, i0 in zip(*np.nonzero(strong), strict=True):
        if label[j0, i0] >= 0:
            continue
        comp = [(j0, i0)]
        label[j0, i0] = len(spots)
        k = 0
        while k < len(comp):
            j, i = comp[k]
            k += 1
            for jj in range(max(j - 1, 0), min(j + 2, ny)):
                for ii in range(max(i - 1, 0), min(i + 2, nx)):
                    if strong[jj, ii] and label[jj, ii] < 0:
                        label[jj, ii] = len(spots)
                        comp.append((jj, ii))
        spots.append(comp)
    out = []
    for comp in spots:
        if not (min_spot_size <= len(comp) <= max_spot_size) or not any(seed[p] for p in comp):
            continue
        v = np.array([f[p] for p in comp])
        jj = np.array([p[0] for p in comp]) + 0.5
        ii = np.array([p[1] for p in comp]) + 0.5
        bg = sum(mu[pbin[p]] for p in comp)
        out.append((ii @ v / v.sum(), jj @ v / v.sum(), v.sum(), v.sum() - bg, len(comp), v.max()))
    out.sort()
    # profile per block bin, optionally weighted per block
    rsum = np.zeros(nb)
    rcnt = np.zeros(nb, int)
    for j, i in zip(*np.nonzero(valid & (pbin >= 0)), strict=True):
        w = t.weight[j // 2, i // 4] if t.weight is not None else 1.0
        rsum[pbin[j, i]] += f[j, i] * w
        rcnt[pbin[j, i]] += 1
    n_sat = int((valid & (f >= saturation)).sum()) if saturation is not None else 0  # f in float64, as defined
    model_pixels = f[rows & valid & (pbin >= 0)]
    return dict(spots=out, rsum=rsum, rcnt=rcnt, n_valid=int(valid.sum()), n_sat=n_sat,
                background=float(np.median(model_pixels)) if len(model_pixels) else float("nan"), mu=mu, sig=sig)


def make_frame(shape, dtype, seed, *, n_spots=6, bg=0.6, sentinel_rows=True):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = np.hypot(yy - ny / 2, xx - nx / 2)
    img = rng.poisson(bg + 2.0 * np.exp(-r / (0.3 * nx))).astype(np.float64)
    for _ in range(n_spots):
        y, x = rng.uniform(3, ny - 3), rng.uniform(3, nx - 3)
        a = rng.uniform(15, 300)
        img += rng.poisson(a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 0.8**2)))
    img = img.astype(dtype)
    if sentinel_rows:
        img[ny // 3, :] = sentinel_for(dtype)
        img[:, nx // 4] = sentinel_for(dtype)
    return img


def constants(shape, *, geometry, mask=None, weighted=False):
    ny, nx = shape
    if geometry:
        return SeriesConstants.build(shape=shape, beam_centre_x=nx / 2 + 0.3, beam_centre_y=ny / 2 - 1.7,
                                     pixel_size_x=75e-6, pixel_size_y=75e-6, distance=0.05, wavelength=1.0, mask=mask,
                                     n_bins=12, polarisation_factor=0.99 if weighted else None)
    return SeriesConstants.build_without_geometry(shape=shape, mask=mask, n_bins=12)


def check(frame, c, **kw):
    ref = reference(frame, c, saturation=kw.get("saturation_value"),
                    **{k: v for k, v in kw.items() if k in ("snr_seed", "snr_grow", "min_spot_size", "max_spot_size", "model_step")})
    spots, stats, prof = analyse_frame(frame, constants=c, method="radial", workspace=make_workspace("radial"), **kw)
    got = sorted(zip(spots.x, spots.y, spots.intensity, spots.intensity_net, spots.n_pixels, spots.peak, strict=True))
    assert len(got) == len(ref["spots"])
    for a, b in zip(got, ref["spots"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(prof.sums, ref["rsum"], rtol=1e-12)
    np.testing.assert_array_equal(prof.n_pixels, ref["rcnt"])
    assert stats.n_valid_pixels == ref["n_valid"]
    assert stats.background == ref["background"] or (np.isnan(stats.background) and np.isnan(ref["background"]))
    if kw.get("saturation_value") is not None:
        assert stats.saturated_fraction == pytest.approx(ref["n_sat"] / ref["n_valid"])
    return spots, stats


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.float32])
@pytest.mark.parametrize("geometry", [True, False])
@pytest.mark.parametrize("shape", [(37, 41), (40, 33), (23, 301)])  # the last: several seed chunks
@pytest.mark.parametrize("masked", [0.02, 0.3])  # sparse mask: fixed-up blocks; dense: masked sweep
def test_matches_the_plain_definitions(dtype, geometry, shape, masked):
    rng = np.random.default_rng(7)
    mask = (rng.random(shape) < masked).astype(np.uint8)
    for seed in range(3):
        img = make_frame(shape, dtype, seed)
        for step in (4, 16):
            spots, _ = check(img, constants(shape, geometry=geometry, mask=mask), saturation_value=40, model_step=step)
            assert spots.n >= 1


def test_weighted_profile_and_thresholds_options():
    img = make_frame((31, 35), np.uint32, 3)
    check(img, constants((31, 35), geometry=True, weighted=True))
    check(img, constants((31, 35), geometry=True), snr_seed=5.0, snr_grow=2.0)


def test_model_paths_agree_when_values_are_large():
    """Integer frames with many values >= HIST leave the histogram path for repeated passes: same model."""
    shape = (48, 52)
    img = make_frame(shape, np.uint32, 5, bg=400.0)
    c = constants(shape, geometry=True)
    t = rs.BlockTables(c)
    sent = sentinel_for(img.dtype)
    small = {"big_b": np.empty(4, np.int32), "big_v": np.empty(4)}  # too few slots: moment passes
    mu_a, sig_a, bg_a = rs.background_model(img, c.ok, sent, t, step=16, iterations=2, ws=small)
    listed = {}
    mu_b, sig_b, bg_b = rs.background_model(img, c.ok, sent, t, step=16, iterations=2, ws=listed)  # histogram + list
    assert not small["hist"].any() and not listed["hist"].any()  # both paths leave the histograms clear for the next frame
    np.testing.assert_allclose(mu_a, mu_b, rtol=1e-12)
    np.testing.assert_allclose(sig_a, sig_b, rtol=1e-12)
    assert bg_a == bg_b == reference(img, c, model_step=16)["background"]
    ref = reference(img, c, model_step=16)
    np.testing.assert_allclose(mu_b, ref["mu"], rtol=1e-12)
    check(img, c)


def test_noise_alone_gives_no_spots_and_a_blank_frame_is_fine():
    rng = np.random.default_rng(11)
    shape = (200, 180)
    c = constants(shape, geometry=True)
    for _ in range(3):
        noise = rng.poisson(0.5, shape).astype(np.uint32)
        spots, stats = check(noise, c)
        assert spots.n <= 1 and not stats.hit
    spots, stats = check(np.zeros(shape, np.uint16), c)
    assert spots.n == 0 and stats.background == 0.0
    allbad = np.full(shape, sentinel_for(np.uint16), np.uint16)
    spots, stats, _ = analyse_frame(allbad, constants=c)
    assert spots.n == 0 and stats.n_valid_pixels == 0


def test_components_larger_than_the_limit_are_dropped_whole():
    shape = (64, 70)
    img = make_frame(shape, np.uint32, 1, n_spots=10, sentinel_rows=False)
    c = constants(shape, geometry=True)
    s, _, _ = analyse_frame(img, constants=c)
    big = int(s.n_pixels.max())
    assert big >= 4
    smaller, _ = check(img, c, max_spot_size=big - 1)  # the reference drops it too, seeds and all
    assert smaller.n == s.n - int((s.n_pixels == big).sum()) and not (smaller.n_pixels >= big).any()


def test_unknown_method_and_bad_thresholds_are_refused():
    c = constants((8, 8), geometry=False)
    with pytest.raises(ValueError, match="unknown spot-finding method"):
        analyse_frame(np.zeros((8, 8), np.uint16), constants=c, method="magic")
    with pytest.raises(ValueError, match="snr_seed"):
        analyse_frame(np.zeros((8, 8), np.uint16), constants=c, snr_seed=2.0, snr_grow=3.0)


def test_nan_and_inf_in_float_frames_and_stale_buffers():
    """NaN is invalid wherever it is (also first in a row); buffers left with inf by an earlier frame
    do not leak into the next one (both methods)."""
    shape = (36, 40)
    c = constants(shape, geometry=True)
    img = make_frame(shape, np.float32, 4)
    img[0, 0] = np.nan
    img[5, :3] = np.nan
    check(img, c)
    ws = make_workspace("radial")
    ws.get(shape, rs.BlockTables.of(c).n_bins, np.dtype(np.float32))["bs"][:] = np.inf  # stale garbage
    _, _, prof = analyse_frame(img, constants=c, workspace=ws)
    assert np.isfinite(prof.sums).all()
    hot = img.copy()
    hot[10, 10] = np.inf
    hot[11, 12] = -np.inf
    check(hot, c)  # infinities are invalid pixels, as NaN
    for method in ("radial", "dispersion"):
        ws = make_workspace(method)
        analyse_frame(hot, constants=c, method=method, workspace=ws)
        again = analyse_frame(img, constants=c, method=method, workspace=ws)
        fresh = analyse_frame(img, constants=c, method=method, workspace=make_workspace(method))
        np.testing.assert_array_equal(again[2].sums, fresh[2].sums)
        assert again[0].n == fresh[0].n and np.isfinite(again[2].sums).all()


@pytest.mark.parametrize("shape", [(1, 57), (57, 1), (1, 1), (2, 3)])
def test_frames_of_one_row_or_column(shape):
    for c in (constants(shape, geometry=True), constants(shape, geometry=False)):
        img = np.random.default_rng(1).poisson(3.0, shape).astype(np.uint16)
        check(img, c)
        analyse_frame(img, constants=c, method="dispersion")


def test_saturation_counts_valid_pixels_only_and_exactly():
    shape = (30, 34)
    c = constants(shape, geometry=True, mask=(np.arange(30 * 34).reshape(shape) % 7 == 0).astype(np.uint8))
    img = make_frame(shape, np.uint16, 2)
    for sat in (0, -5, 3, 1e9):
        _, st = check(img, c, saturation_value=sat)
        assert 0.0 <= st.saturated_fraction <= 1.0
    _, st, _ = analyse_frame(img, constants=c, sentinel=0)  # the type's maximum is a valid value here
    assert st.saturated_fraction == 0.0
    f = np.full(shape, 100.0, np.float32)
    _, st, _ = analyse_frame(f, constants=c, saturation_value=100.000001)  # not rounded down to 100.0
    assert st.saturated_fraction == 0.0
    _, st, _ = analyse_frame(f, constants=c, saturation_value=100.0)
    assert st.saturated_fraction == 1.0


def test_big_endian_frames_give_the_native_answer():
    shape = (30, 34)
    c = constants(shape, geometry=True)
    img = make_frame(shape, np.uint16, 3)
    for method in ("radial", "dispersion"):
        a = analyse_frame(img, constants=c, method=method)
        b = analyse_frame(img.astype(">u2"), constants=c, method=method)
        np.testing.assert_array_equal(a[0].x, b[0].x)
        np.testing.assert_array_equal(a[2].sums, b[2].sums)


def test_strided_and_fortran_frames_give_the_answer_of_their_copy():
    shape = (30, 34)
    c = constants(shape, geometry=True)
    wide = make_frame((30, 68), np.uint32, 4)
    for view in (wide[:, ::2], np.asfortranarray(wide[:, :34])):
        assert not view.flags.c_contiguous
        for method in ("radial", "dispersion"):
            a = analyse_frame(view, constants=c, method=method)
            b = analyse_frame(np.ascontiguousarray(view), constants=c, method=method)
            assert a[0].n >= 1
            np.testing.assert_array_equal(a[0].x, b[0].x)
            np.testing.assert_array_equal(a[2].sums, b[2].sums)
    mask = np.zeros(shape, np.uint8)
    mask[:, 5] = 1
    cf = constants(shape, geometry=True, mask=np.asfortranarray(mask))
    assert cf.ok.flags.c_contiguous
    a = analyse_frame(wide[:, :34], constants=cf)
    b = analyse_frame(wide[:, :34], constants=constants(shape, geometry=True, mask=mask))
    np.testing.assert_array_equal(a[0].x, b[0].x)


@pytest.mark.parametrize("bad", [dict(model_step=0), dict(model_step=-1), dict(clip_iterations=-1),
                                 dict(min_spot_size=0), dict(min_spot_size=5, max_spot_size=4)])
def test_bad_options_are_refused(bad):
    c = constants((8, 8), geometry=False)
    with pytest.raises(ValueError, match="model_step"):
        analyse_frame(np.zeros((8, 8), np.uint16), constants=c, **bad)


def test_component_buffers_too_small_are_grown_and_the_frame_walked_again():
    """Stack and spot table start small here (a new workspace starts with 4096 and 256): every
    overflow is retried with a larger buffer and the answer is the reference's."""
    shape = (64, 150)
    img = make_frame(shape, np.uint32, 9, n_spots=12, sentinel_rows=False)
    img[50, 10:140] += 900  # wider than the bit window: grown block by block, on the stack
    c = constants(shape, geometry=True)
    check(img, c)
    ws = make_workspace("radial")
    b = ws.get(shape, rs.BlockTables.of(c).n_bins, img.dtype)
    b["stack"] = np.empty((5, 10), np.int32)
    b["out"] = np.zeros((1, 6))
    spots, _, _ = analyse_frame(img, constants=c, workspace=ws)
    assert spots.n >= 5 and ws.b["stack"].shape[1] > 10 and ws.b["out"].shape[0] > 1
    ref = analyse_frame(img, constants=c, workspace=make_workspace("radial"))[0]
    np.testing.assert_array_equal(spots.x, ref.x)
    np.testing.assert_array_equal(spots.n_pixels, ref.n_pixels)


def draw_lines(img, lines, value=700):
    """Add ``value`` along straight lines (row, column, row step, column step, length), clipped to the frame."""
    ny, nx = img.shape
    for j0, i0, dj, di, n in lines:
        for k in range(n):
            j, i = j0 + k * dj, i0 + k * di
            if 0 <= j < ny and 0 <= i < nx:
                img[j, i] += value
    return img


@pytest.mark.parametrize("masked", [0.0, 0.03])
def test_components_wider_or_taller_than_the_bit_window_match_the_definitions(masked):
    """The bit window spans 64 rows and 64 columns around the seed block; longer streaks, crossings
    and components reaching the frame edge are walked block by block, with the same answer."""
    shape = (100, 170)
    rng = np.random.default_rng(12)
    mask = (rng.random(shape) < masked).astype(np.uint8)
    for geometry in (True, False):
        c = constants(shape, geometry=geometry, mask=mask)
        for lines in ([(10, 5, 0, 1, 150)], [(3, 40, 1, 0, 95)], [(0, 0, 1, 1, 99)],
                      [(60, 0, 0, 1, 40), (20, 39, 1, 0, 41), (20, 39, -1, 1, 25)],  # an L with a spur, from the edge
                      [(50, 160, 1, 1, 30), (99, 80, 0, 1, 90)],  # at the right and bottom edges
                      [(30, 80, 0, 1, w) for w in (27, 28, 29)] + [(40, 60 + w, 1, 0, 33) for w in (33, 34, 35)]):
            img = draw_lines(make_frame(shape, np.uint32, 3, n_spots=5, sentinel_rows=False), lines)
            spots, _ = check(img, c)
            assert spots.n_pixels.max() >= 25


def components(img, c, *, window, max_spot_size=1000):
    """The component rows of ``grow_spots`` over the whole frame, sorted."""
    t = rs.BlockTables.of(c)
    sent = sentinel_for(img.dtype)
    mu, sig, _ = rs.background_model(img, c.ok, sent, t, step=2, iterations=2)
    lo, hi = mu + 3 * sig, mu + 8 * sig
    b = make_workspace("radial").get(img.shape, t.n_bins, img.dtype)
    b["seeds"] = np.empty(img.size, np.int64)
    n_seed = rs.block_pass(img, c.ok, sent, t.bin, np.zeros((1, 1)), False, hi, None, b["rsum"], b["rmiss"], b["bs"],
                           b["bc"], b["bm"], b["seeds"], 0, t.mask_ptr, t.mask_cols, t.mask_sparse, 0,
                           t.bin.shape[0])[2]
    state = np.zeros(2, np.int64)
    b["stack"] = np.empty((5, img.size + 16), np.int32)
    b["out"] = np.zeros((img.size, 6))
    assert rs.grow_spots(img, sent, t.bin, t.ok_bits, lo, hi, mu, b["seeds"], n_seed, max_spot_size, b["marks"],
                         b["win"], b["stack"], b["slot"], b["out"], state, img.shape[0], window) == 0
    assert not b["win"].any()
    out = b["out"][:state[1]]
    return out[np.lexsort(out.T[::-1])]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ny=st.integers(1, 90), nx=st.integers(1, 140), seed=st.integers(0, 2**16), masked=st.sampled_from([0.0, 0.05]),
       lines=st.lists(st.tuples(st.integers(-5, 95), st.integers(-5, 145), st.integers(-1, 1), st.integers(-1, 1),
                                st.integers(1, 90)), max_size=4),
       max_spot_size=st.sampled_from([1000, 40]))
def test_fuzz_bit_window_and_block_walk_find_the_same_components(ny, nx, seed, masked, lines, max_spot_size):
    rng = np.random.default_rng(seed)
    mask = (rng.random((ny, nx)) < masked).astype(np.uint8)
    img = draw_lines(rng.poisson(2.0, (ny, nx)).astype(np.uint32), lines, int(rng.integers(20, 900)))
    c = constants((ny, nx), geometry=False, mask=mask)
    a = components(img, c, window=True, max_spot_size=max_spot_size)
    b = components(img, c, window=False, max_spot_size=max_spot_size)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a[:, [0, 1, 2, 3, 5]], b[:, [0, 1, 2, 3, 5]])
    np.testing.assert_allclose(a[:, 4], b[:, 4], rtol=1e-12)  # μ sums: another order of additions


def test_default_model_step_keeps_at_least_64_model_rows():
    assert [rs.auto_model_step(ny) for ny in (1, 63, 64, 200, 1065, 2048, 2167, 4371)] == [1, 1, 1, 3, 16, 32, 32, 32]
    rng = np.random.default_rng(8)
    img = rng.poisson(3.0, (300, 90)).astype(np.uint16)
    img[100:103, 40:43] = 200
    c = constants(img.shape, geometry=True)
    auto = rs.analyse_frame_radial(img, constants=c)
    explicit = rs.analyse_frame_radial(img, constants=c, model_step=4)
    other = rs.analyse_frame_radial(img, constants=c, model_step=1)
    assert auto[1].background == explicit[1].background
    np.testing.assert_array_equal(auto[0].x, explicit[0].x)
    assert auto[0].n == 1 and other[0].n == 1


def test_ice_sums_over_the_model_rows_with_pixel_bands():
    from mxcat.live.kernels.fused import _tables

    c = SeriesConstants.build(shape=(97, 131), beam_centre_x=60.3, beam_centre_y=40.8, pixel_size_x=172e-6,
                              pixel_size_y=172e-6, distance=0.03, wavelength=1.0, mask=None)
    rng = np.random.default_rng(3)
    img = rng.poisson(5.0, c.shape).astype(np.uint16)
    img[::7, ::5] = sentinel_for(np.uint16)
    ok = c.ok.copy()
    ok[10:20, 30:90] = 0
    _, _, n_rings, irun = _tables(c)
    assert n_rings > 0 and (c.ice_band > 0).any()
    for step in (1, 3, 8):
        band, nbr = rs.ice_rows(img, ok, sentinel_for(np.uint16), step, irun, n_rings)
        rows = np.zeros(c.shape, bool)
        rows[::step] = True
        good = rows & (ok != 0) & (img != sentinel_for(np.uint16))
        f = img.astype(float)
        for k in range(1, n_rings + 1):
            for got, sel in ((band[k], good & (c.ice_band == k)), (nbr[k], good & (c.ice_near == k) & (c.ice_band == 0))):
                np.testing.assert_allclose(got, [sel.sum(), f[sel].sum(), (f[sel] ** 2).sum()])


def test_ice_ring_scores_of_the_radial_method():
    c = SeriesConstants.build(shape=(512, 512), beam_centre_x=256, beam_centre_y=256, pixel_size_x=172e-6,
                              pixel_size_y=172e-6, distance=0.08, wavelength=1.0)
    rng = np.random.default_rng(5)
    frame = rng.poisson(10.0, c.shape).astype(np.uint32)
    clean = analyse_frame(frame, constants=c, method="radial")[1]
    assert abs(clean.ice_ring_score) < 1.0
    band = c.ice_band == 4
    frame[band] += rng.poisson(15.0, band.sum()).astype(np.uint32)
    iced = analyse_frame(frame, constants=c, method="radial")[1]
    assert iced.ice_ring_score > 2.0 and int(np.argmax(iced.ice_ring_scores)) == 3
    every_pixel = analyse_frame(frame, constants=c, method="dispersion")[1]  # same definition on all rows
    assert iced.ice_ring_score == pytest.approx(every_pixel.ice_ring_score, abs=0.5)


def test_spot_table_follows_the_definitions():
    """The spot columns from component rows (pixels, sum, x sum, y sum, background sum, peak):
    sizes below the minimum dropped, centroid and SNR of a zero sum NaN and 0."""
    out = np.array([[3, 30.0, 45.0, 60.0, 6.0, 12.0],
                    [2, 50.0, 10.0, 10.0, 1.0, 30.0],  # too small
                    [4, 0.0, 0.0, 0.0, 2.0, 0.0],  # a zero sum
                    [5, 100.0, 250.0, 50.0, 20.0, 40.0],
                    [9, 1.0, 1.0, 1.0, 1.0, 1.0]])  # beyond n_comp
    x, y, s, net, bg, npx, peak, snr, n_strong = rs.spot_table(out, 4, 3)
    np.testing.assert_array_equal(npx, [3, 4, 5])
    assert npx.dtype == np.int32 and n_strong == 12
    np.testing.assert_array_equal(x, [1.5, np.nan, 2.5])
    np.testing.assert_array_equal(y, [2.0, np.nan, 0.5])
    np.testing.assert_array_equal(net, [24.0, -2.0, 80.0])
    np.testing.assert_array_equal(bg, [2.0, 0.5, 4.0])
    np.testing.assert_array_equal(snr, [24.0 / np.sqrt(30.0), 0.0, 8.0])
    np.testing.assert_array_equal(peak, [12.0, 0.0, 40.0])
    np.testing.assert_array_equal(s, [30.0, 0.0, 100.0])
