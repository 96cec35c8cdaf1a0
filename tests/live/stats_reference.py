"""The resolution estimators of :mod:`mxcat.live.kernels.resolution` stated in plain NumPy.

This is the statement the compiled versions are compared with (``test_resolution.py``); it was the
engine's own implementation until the estimators were compiled. Definitions and sources in
:mod:`mxcat.live.kernels.resolution`.
"""

from __future__ import annotations

import math

import numpy as np


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares straight line y = m·x + c (closed form; ``np.polyfit`` costs ~0.5 ms a call)."""
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0, float(np.mean(y)) if len(y) else 0.0
    xm = float(np.mean(x))
    ym = float(np.mean(y))
    dx = x - xm
    m = float(dx @ (y - ym)) / float(dx @ dx)
    return m, ym - m * xm


def _wilson_outliers(intensity: np.ndarray, ice: np.ndarray, p_cutoff: float = 1e-2) -> np.ndarray:
    """Iterative Wilson outlier flags (Read 1999, Acta Cryst. D55, 1759), as in DIALS."""
    out = np.zeros(len(intensity), bool)
    e_cut = math.sqrt(-math.log(p_cutoff))
    inl = np.ones(len(intensity), bool)
    while True:
        sel = inl & ~ice
        if not sel.any():
            return out
        sigma_n = float(np.mean(intensity[sel]))
        if sigma_n <= 0:
            return out
        new = inl & (np.sqrt(np.maximum(intensity, 0)) / math.sqrt(sigma_n) >= e_cut)
        if not new.any():
            return out
        out |= new
        inl &= ~new


def estimate_d_min(*, dstar2: np.ndarray, intensity: np.ndarray, ice: np.ndarray, slack: float = 0.0) -> float:
    """DIALS' ``estimate_resolution_limit``; −1 when undetermined. ``slack`` moves the envelope line up
    (> 0) or down, to bracket spots that lie on it within rounding (the tests use ±1e-9)."""
    sel = intensity > 0
    ds2, inten, ice = dstar2[sel], intensity[sel], ice[sel]
    n = len(ds2)
    if n == 0:
        return -1.0
    log_isig = np.log(np.sqrt(inten))  # I / sqrt(I)
    n_slots = min(max(n // 20, 5), 20)
    order = np.argsort(ds2, kind="stable")
    per = n / n_slots
    outliers = np.zeros(n, bool)
    xs_u, ys_u = [], []
    lo_edge = -np.inf
    for k in range(n_slots):
        hi_edge = ds2[order[min(int(round((k + 1) * per)) - 1, n - 1)]]
        in_bin = (ds2 > lo_edge) & (ds2 <= hi_edge) if k else (ds2 <= hi_edge)
        lo_edge = hi_edge
        if not (in_bin & ~ice).any():
            continue
        idx = np.flatnonzero(in_bin)
        o = _wilson_outliers(inten[idx], ice[idx])
        outliers[idx] = o
        use = idx[~o & ~ice[idx]]
        if len(use) == 0:
            continue
        perm = use[np.argsort(log_isig[use], kind="stable")]
        i_lower = perm[int(math.floor(0.1 * len(perm)))]
        i_upper = perm[int(math.floor(0.9 * len(perm)))]
        xs_u.append(ds2[i_lower])
        ys_u.append(log_isig[i_upper])
    if len(xs_u) < 2:
        return -1.0
    m_u, c_u = _fit(np.array(xs_u), np.array(ys_u))
    inside = (log_isig < m_u * ds2 + c_u + slack) & ~outliers & ~ice
    if not inside.any():
        return -1.0
    return float(1.0 / math.sqrt(ds2[inside].max()))


def distl_method_1(*, dstar2: np.ndarray) -> tuple[float, float]:
    """Zhang et al. (2006) method 1: (d_min, noisiness); (−1, −1) with too few spots."""
    d = 1.0 / np.sqrt(dstar2)
    n = len(d)
    step = 2
    while n / step > 40:
        step += 1
    order = np.argsort(-d, kind="stable")
    pick = order[[i * step for i in range(n // step)]]
    ds3 = dstar2[pick] ** 1.5
    d_sub = d[pick]
    m = len(ds3)
    if m < 6:
        return -1.0, -1.0
    slopes = (ds3[1:] - ds3[0]) / np.arange(1, m)
    skip = 3
    p_m = int(np.argmax(slopes[skip:])) + 1 + skip
    x1 = np.array([0.0, ds3[0]])
    x2 = np.array([float(p_m), ds3[p_m]])
    v = np.array([x2[1] - x1[1], -(x2[0] - x1[0])])
    v /= np.linalg.norm(v)
    idx = np.arange(1, p_m, dtype=np.float64)
    gaps = np.concatenate([[0.0], np.abs(v[0] * (x1[0] - idx) + v[1] * (x1[1] - ds3[1:p_m]))])
    s = float(np.std(gaps, ddof=1)) if len(gaps) > 1 else 0.0
    p_k = int(np.argmax(gaps))
    p_g = p_k
    for i in range(p_k + 1, len(gaps)):
        if gaps[i] > gaps[p_k] - 0.5 * s:
            p_g = i
    sl = slopes[: m - 1]
    noisy = int(np.count_nonzero(np.triu(sl[:, None] >= sl[None, :], k=1)))  # pairs i < j with sl[i] >= sl[j]
    noisiness = noisy / ((m - 1) * (m - 2) / 2)
    return float(d_sub[p_g]), float(noisiness)


def distl_method_2(*, dstar2: np.ndarray) -> tuple[float, float]:
    """Zhang et al. (2006) method 2: (d_min, noisiness); (−1, −1) with too few spots."""
    d = np.unique(1.0 / np.sqrt(dstar2))[::-1]
    if len(d) < 4:
        return -1.0, -1.0
    ds3 = (1.0 / d) ** 3
    low = int(math.ceil(min(max(25, 0.05 * len(d)), 0.25 * len(d))))
    step = ds3[min(low, len(d) - 1)] - ds3[0]
    if step <= 0:
        return -1.0, -1.0
    n_slots = int(math.ceil((ds3[-1] - ds3[0]) / step))
    n_slots = max(min(n_slots, 40), 20)
    step = (ds3[-1] - ds3[0]) / n_slots
    edges_ds3 = ds3[0] + step * np.arange(n_slots + 1)
    d_edges = np.empty(n_slots + 1)
    d_edges[0] = d[0]
    d_edges[1:] = 1.0 / edges_ds3[1:] ** (1.0 / 3.0)
    d_edges[-1] = d[-1]  # the last edge is the smallest d (exactly, not through rounding)
    d_all = 1.0 / np.sqrt(dstar2)
    counts = np.count_nonzero((d_all[None, :] < d_edges[:-1, None]) & (d_all[None, :] >= d_edges[1:, None]), axis=1)
    t0 = (counts[0] + counts[1]) / 2.0
    i = 0
    for i in range(n_slots - 1):
        if counts[i] < 0.15 * t0 and counts[i + 1] < 0.15 * t0:
            break
    d_min = float(d_edges[i + 1])
    noisy = int(np.count_nonzero(np.triu(counts[:, None] <= counts[None, :], k=1)))  # pairs k < j, counts[k] <= counts[j]
    return d_min, noisy / (0.5 * n_slots * (n_slots - 1))
