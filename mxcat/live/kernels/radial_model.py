"""Background model of the radial analysis (:mod:`.radial_spots`): per-bin mean and width, clipped.

Per profile bin, from the valid pixels of the rows ``j % step == 0`` inside the profile range:
mean μ and standard deviation σ, then ``iterations`` passes keeping values <= μ + 3σ_e, with
σ_e = max(σ, sqrt(max(μ, 0)), SIGMA_FLOOR); bins with fewer than MIN_MODEL_PIXELS model pixels
take the nearest bin that has enough (the lower one on a tie). Integer frames are read once:
per-bin histograms of the values below ``HIST`` plus a list of the larger ones give every
clipping iteration exactly; float frames (or too many large values) are read once per iteration.
The frame's background is the median of the same model pixels. Clipping after peakfinder8
(Barty et al. (2014), J. Appl. Cryst. 47, 1118-1131).
"""

from __future__ import annotations

import numba
import numpy as np

from .blocks import BlockTables, _valid

MIN_MODEL_PIXELS = 16
SIGMA_FLOOR = 0.5


@numba.njit(cache=True)
def model_sums(img, ok, sentinel, bbin, step, clip, acc):
    """Count, sum and sum of squares per block bin of the valid values <= ``clip[bin]`` on the rows
    ``j % step == 0``; ``acc`` (n_bins, 3, 4) is zeroed here (4 interleaved lanes)."""
    ny, nx = img.shape
    acc[:] = 0.0
    for j in range(0, ny, step):
        src = img[j]
        okr = ok[j]
        br = bbin[j >> 1]
        for i in range(nx):
            b = br[i >> 2]
            v = src[i]
            if b >= 0 and _valid(v, okr[i], sentinel):
                f = float(v)
                if f <= clip[b]:
                    lane = i & 3
                    acc[b, 0, lane] += 1.0
                    acc[b, 1, lane] += f
                    acc[b, 2, lane] += f * f


HIST = 256
"""Integer values below this go to the per-bin histograms of the background model; larger ones are listed."""


@numba.njit(cache=True)
def model_histogram(img, ok, sentinel, bbin, step, hist, big_b, big_v):
    """Integer frames: per block bin, counts of the valid values 0..HIST−1 on the rows
    ``j % step == 0`` (into ``hist`` (4, n_bins, HIST), 4 interleaved lanes, all zero on entry),
    and the bin and value of the larger ones (at most ``len(big_b)``). Returns (number of larger
    values, largest counted value + 1: the used width of ``hist``); the number is −1 when they do
    not fit (the caller then uses :func:`model_sums`; ``hist`` is zero again)."""
    ny, nx = img.shape
    n_big = 0
    width = 0
    cap = big_b.shape[0]
    for j in range(0, ny, step):
        src = img[j]
        okr = ok[j]
        br = bbin[j >> 1]
        for i in range(nx):
            b = br[i >> 2]
            v = src[i]
            if b >= 0 and _valid(v, okr[i], sentinel):
                if v < HIST:
                    hist[i & 3, b, v] += 1
                    width = max(width, int(v) + 1)
                else:
                    if n_big == cap:
                        hist[:, :, :width] = 0
                        return -1, 0
                    big_b[n_big] = b
                    big_v[n_big] = float(v)
                    n_big += 1
    return n_big, width


@numba.njit(cache=True)
def histogram_moments(h, width, big_b, big_v, n_big, clip, out):
    """Count, sum and sum of squares per bin of the model values <= ``clip[bin]`` from the
    histograms ``h`` (n_bins, ≥ ``width``; zero from ``width`` on) and the listed larger values;
    into ``out`` (n_bins, 3). The histogram sums are taken in integers (counts below 2^31 times
    values below HIST²: no overflow), so they are exact and the loop vectorises."""
    nb = h.shape[0]
    for b in range(nb):
        top = min(width - 1, int(np.floor(clip[b]))) if clip[b] < width else width - 1
        c = 0
        s1 = 0
        s2 = 0
        hb = h[b]
        for v in range(top + 1):
            n = np.int64(hb[v])
            c += n
            s1 += n * v
            s2 += n * (v * v)
        out[b, 0] = float(c)
        out[b, 1] = float(s1)
        out[b, 2] = float(s2)
    for k in range(n_big):
        b = big_b[k]
        f = big_v[k]
        if f <= clip[b]:
            out[b, 0] += 1.0
            out[b, 1] += f
            out[b, 2] += f * f


def _model_from_moments(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _model_kernel(s, SIGMA_FLOOR, float(MIN_MODEL_PIXELS))


@numba.njit(cache=True)
def _model_kernel(s, floor, min_n):
    """(μ, σ_e) per bin from [count, sum, sum of squares]; bins with fewer than ``min_n`` pixels take
    the nearest bin that has enough (the lower one on a tie); none at all: μ = 0, σ_e = floor."""
    nb = s.shape[0]
    m = np.zeros(nb)
    sig = np.full(nb, floor)
    good = np.zeros(nb, np.bool_)
    for b in range(nb):
        n = s[b, 0]
        if n >= min_n:
            good[b] = True
            mb = s[b, 1] / n
            var = s[b, 2] / n - mb * mb
            m[b] = mb
            sig[b] = max(max(np.sqrt(max(var, 0.0)), np.sqrt(max(mb, 0.0))), floor)
    prev = np.full(nb, -1, np.int64)
    nxt = np.full(nb, -1, np.int64)
    last = -1
    for b in range(nb):
        if good[b]:
            last = b
        prev[b] = last
    last = -1
    for b in range(nb - 1, -1, -1):
        if good[b]:
            last = b
        nxt[b] = last
    for b in range(nb):
        if good[b] or (prev[b] < 0 and nxt[b] < 0):
            continue
        if nxt[b] < 0 or (prev[b] >= 0 and b - prev[b] <= nxt[b] - b):
            k = prev[b]
        else:
            k = nxt[b]
        m[b] = m[k]
        sig[b] = sig[k]
    return m, sig


def model_buffers(ws: dict, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The histogram model's buffers in workspace ``ws`` (made on first use): lane histograms
    (kept all zero between frames: the kernels clear what they used) and the list of large values."""
    if "hist" not in ws:
        ws["hist"] = np.zeros((4, n_bins, HIST), np.int32)
    if "big_b" not in ws:
        ws["big_b"], ws["big_v"] = np.empty(1 << 17, np.int32), np.empty(1 << 17, np.float64)
    return ws["hist"], ws["big_b"], ws["big_v"]


def background_model(img, ok, sentinel, tables: BlockTables, *, step: int, iterations: int, ws: dict | None = None):
    """(μ, σ_e) per bin after iterative clipping, and the median of the model pixels (the frame's
    ``background``; see module docstring). Integer frames are read once (histograms of small
    values plus a list of the others); float frames, or integer frames with too many large
    values, once per iteration."""
    nb = tables.n_bins
    ws = {} if ws is None else ws
    clip = np.full(nb, np.inf)
    if np.issubdtype(img.dtype, np.integer):
        hist, big_b, big_v = model_buffers(ws, nb)
        n_big, width = model_histogram(img, ok, sentinel, tables.bin, step, hist, big_b, big_v)
        if n_big >= 0:
            return _histogram_model(hist, width, big_b, big_v, n_big, iterations, SIGMA_FLOOR,
                                    float(MIN_MODEL_PIXELS))
    if "acc" not in ws:
        ws["acc"] = np.zeros((nb, 3, 4))
    acc = ws["acc"]
    for _ in range(iterations + 1):
        model_sums(img, ok, sentinel, tables.bin, step, clip, acc)
        mu, sig = _model_from_moments(acc.sum(axis=2))
        clip = mu + 3.0 * sig
    values = model_values(img, ok, sentinel, tables.bin, step)
    return mu, sig, float(np.median(values)) if len(values) else float("nan")


@numba.njit(cache=True)
def model_values(img, ok, sentinel, bbin, step):
    """The valid values of the model rows inside the profile range (float64)."""
    ny, nx = img.shape
    out = np.empty(((ny + step - 1) // step) * nx, np.float64)
    n = 0
    for j in range(0, ny, step):
        for i in range(nx):
            v = img[j, i]
            if bbin[j >> 1, i >> 2] >= 0 and _valid(v, ok[j, i], sentinel):
                out[n] = float(v)
                n += 1
    return out[:n]


@numba.njit(cache=True)
def _histogram_model(hist, width, big_b, big_v, n_big, iterations, floor, min_n):
    """(μ, σ_e, median) from the lane histograms (used up to ``width``) and the listed large values
    of :func:`model_histogram`: ``iterations`` + 1 rounds of :func:`histogram_moments` and
    :func:`_model_kernel`, then the median of all model values (``np.median``'s value). The lanes
    are summed into lane 0 and ``hist`` is left all zero."""
    lanes, nb, _ = hist.shape
    h = hist[0]
    counts = np.zeros(max(width, 1), np.int64)  # over all bins, for the median
    for b in range(nb):  # contiguous inner loops over the values: they vectorise
        hb = h[b]
        for lane in range(1, lanes):
            hl = hist[lane, b]
            for v in range(width):
                hb[v] += hl[v]
                hl[v] = 0
        for v in range(width):
            counts[v] += hb[v]
    clip = np.full(nb, np.inf)
    mom = np.zeros((nb, 3))
    mu, sig = clip, clip  # typed here; the loop runs at least once
    for _ in range(iterations + 1):
        histogram_moments(h, width, big_b, big_v, n_big, clip, mom)
        mu, sig = _model_kernel(mom, floor, min_n)
        clip = mu + 3.0 * sig
    h[:, :width] = 0
    return mu, sig, _median_of_counts(counts, np.sort(big_v[:n_big]))


@numba.njit(cache=True)
def _median_of_counts(counts, big_sorted):
    """``np.median`` of the values with these counts (value = index) plus the larger ones, sorted
    (all of them above the counted values); nan when there are none."""
    n_small = counts.sum()
    n = n_small + big_sorted.shape[0]
    if n == 0:
        return np.nan
    lo = _kth(counts, n_small, big_sorted, (n - 1) // 2)
    if n % 2:
        return lo
    return (lo + _kth(counts, n_small, big_sorted, n // 2)) / 2.0


@numba.njit(cache=True)
def _kth(counts, n_small, big_sorted, k):
    """The k-th smallest (0-based) of the counted values followed by ``big_sorted``."""
    if k >= n_small:
        return big_sorted[k - n_small]
    c = 0
    for v in range(counts.shape[0]):
        c += counts[v]
        if c > k:
            return float(v)
    return np.nan
