"""Spot finding: dispersion threshold and components against brute force; detection on synthetic frames."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from mxcat.live.kernels import SeriesConstants, find_spots, sentinel_for
from mxcat.live.kernels.spots import dispersion_runs, label_runs


def naive_strong(img, ok, sentinel, k=3, nsig_b=6.0, nsig_s=3.0, min_count=2, gain=1.0):
    ny, nx = img.shape
    f = img.astype(np.float64)
    valid = ok.astype(bool) & (img != sentinel) & (f >= 0)
    out = np.zeros((ny, nx), bool)
    for j in range(ny):
        for i in range(nx):
            if not valid[j, i] or f[j, i] <= 0:
                continue
            sl = (slice(max(j - k, 0), j + k + 1), slice(max(i - k, 0), i + k + 1))
            vals = f[sl][valid[sl]]
            m = len(vals)
            if m < max(min_count, 2):
                continue
            mean = vals.mean()
            if mean <= 0:
                continue
            var = vals.var(ddof=1)
            out[j, i] = (var / mean > 1 + nsig_b * np.sqrt(2 / (m - 1))) and (f[j, i] - mean > nsig_s * np.sqrt(gain * mean))
    return out


def runs_to_mask(shape, ry, rx0, rx1):
    m = np.zeros(shape, bool)
    for y, a, b in zip(ry, rx0, rx1, strict=False):
        m[y, a:b + 1] = True
    return m


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.float32])
def test_dispersion_matches_naive_box(dtype):
    rng = np.random.default_rng(3)
    img = rng.poisson(3.0, (64, 80)).astype(dtype)
    ys, xs = rng.integers(0, 64, 40), rng.integers(0, 80, 40)
    img[ys, xs] += rng.integers(5, 60, 40).astype(dtype)
    sent = sentinel_for(dtype)
    img[20:23, :] = sent
    img[:, 50] = sent
    ok = np.ones(img.shape, np.uint8)
    ok[5:9, 5:12] = 0
    ry, rx0, rx1, bg = dispersion_runs(img, ok, sent, 3, 6.0, 3.0, 2.0, 1.0, 0.0)
    got = runs_to_mask(img.shape, ry, rx0, rx1)
    ref = naive_strong(img, ok, sent)
    assert ref.sum() > 10
    np.testing.assert_array_equal(got, ref)
    assert len(bg) == ref.sum()


def bfs_components(mask):
    seen = np.zeros(mask.shape, bool)
    comps = []
    ny, nx = mask.shape
    for j, i in zip(*np.nonzero(mask), strict=False):
        if seen[j, i]:
            continue
        comp, q = [], deque([(j, i)])
        seen[j, i] = True
        while q:
            a, b = q.popleft()
            comp.append((a, b))
            for da in (-1, 0, 1):
                for db in (-1, 0, 1):
                    c, d = a + da, b + db
                    if 0 <= c < ny and 0 <= d < nx and mask[c, d] and not seen[c, d]:
                        seen[c, d] = True
                        q.append((c, d))
        comps.append(frozenset(comp))
    return set(comps)


@pytest.mark.parametrize("density", [0.1, 0.3, 0.5])
def test_components_match_bfs(density):
    rng = np.random.default_rng(int(density * 10))
    mask = rng.random((64, 80)) < density
    ry, rx0, rx1 = [], [], []
    for j in range(mask.shape[0]):
        i = 0
        while i < mask.shape[1]:
            if mask[j, i]:
                s = i
                while i + 1 < mask.shape[1] and mask[j, i + 1]:
                    i += 1
                ry.append(j)
                rx0.append(s)
                rx1.append(i)
            i += 1
    ry, rx0, rx1 = (np.array(a, np.int32) for a in (ry, rx0, rx1))
    labels, n_comp = label_runs(ry, rx0, rx1)
    comps: dict[int, set] = {}
    for lab, y, a, b in zip(labels, ry, rx0, rx1, strict=False):
        comps.setdefault(int(lab), set()).update((int(y), x) for x in range(a, b + 1))
    assert n_comp == len(comps)
    assert {frozenset(c) for c in comps.values()} == bfs_components(mask)


def synthetic(n=1024, n_spots=150, bg=2.0, seed=0, dtype=np.uint32):
    rng = np.random.default_rng(seed)
    lam = np.full((n, n), bg)
    sy = rng.uniform(10, n - 10, n_spots)
    sx = rng.uniform(10, n - 10, n_spots)
    amp = rng.uniform(5, 60, n_spots) * np.sqrt(bg)
    yy, xx = np.mgrid[-4:5, -4:5]
    for y, x, a in zip(sy, sx, amp, strict=False):
        iy, ix = int(y), int(x)
        lam[iy - 4:iy + 5, ix - 4:ix + 5] += a * np.exp(-((yy + iy - y) ** 2 + (xx + ix - x) ** 2) / (2 * 0.8**2))
    img = rng.poisson(lam).astype(dtype)
    sent = np.iinfo(dtype).max
    img[500:537, :] = sent  # module gaps
    img[:, 700:710] = sent
    in_gap = ((sy > 496) & (sy < 541)) | ((sx > 696) & (sx < 714))
    return img, sy[~in_gap], sx[~in_gap], amp[~in_gap] / np.sqrt(bg)


def test_detection_recall_and_false_positives():
    consts = SeriesConstants.build_without_geometry(shape=(1024, 1024))
    recalls = []
    for seed in range(2):
        img, sy, sx, peak_snr = synthetic(seed=seed)
        spots = find_spots(img, constants=consts)
        # centroids use pixel centres at i + 0.5; truth uses the index itself
        px, py = spots.x - 0.5, spots.y - 0.5
        strong = peak_snr >= 10
        found = np.array([np.min(np.hypot(px - x, py - y)) < 1.5 for x, y in zip(sx[strong], sy[strong], strict=False)])
        recalls.append(found.mean())
        assert np.all(np.isfinite(spots.x)) and np.all(spots.n_pixels >= 3)
    assert min(recalls) >= 0.95, recalls
    for seed in range(3):
        img, *_ = synthetic(n_spots=0, seed=10 + seed)
        assert find_spots(img, constants=consts).n <= 2


def test_sentinel_and_masked_pixels_never_count():
    consts = SeriesConstants.build_without_geometry(shape=(64, 80), mask=np.pad(np.zeros((60, 76)), 2, constant_values=1))
    img = np.full((64, 80), 1, np.uint16)
    img[30:33, 30:33] = 65535  # sentinel block: not a spot
    img[0:2, 0:80] = 5000  # masked border
    img[10:12, 10:12] = 200  # a real spot
    s = find_spots(img, constants=consts)
    assert s.n == 1
    assert s.x[0] == pytest.approx(11.0) and s.y[0] == pytest.approx(11.0)
    assert s.intensity[0] == 800 and s.peak[0] == 200 and s.n_pixels[0] == 4
