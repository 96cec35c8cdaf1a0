"""Spot finding: DIALS' "dispersion" threshold, then 8-connected components of strong pixels.

Threshold after Parkhurst et al. (2016), J. Appl. Cryst. 49, 1912-1921, as coded in DIALS
(``dials/algorithms/image/threshold/local.h``, ``DispersionThreshold``): over the (2k+1)² box
of *valid* pixels around a pixel (truncated at the frame edges; the pixel itself included) with
count m, sum x and sum of squares y, the pixel (value I, valid, m >= min_local, x >= 0,
I > global_threshold) is strong when both
    m·y − x² − x(m−1) > g·x·σ_b·sqrt(2(m−1))   ⇔  var/mean > 1 + σ_b·sqrt(2/(m−1))  (not background)
    m·I − x > σ_s·sqrt(g·x·m)                   ⇔  I − mean > σ_s·sqrt(g·mean)      (significant),
with var the sample variance. Note DIALS' second test uses the Poisson sigma sqrt(g·mean), not
sqrt(var); we follow DIALS. Box sums come from running column sums plus a per-row prefix sum, so
the cost is O(pixels) whatever the box size and nothing is allocated per pixel; sums are float64
(exact for integer counts below ~10^7). Strong pixels are emitted as row runs and joined with
union-find (8-connectivity). Per spot, as DIALS' spot finder reports it: centroid x (fast), y
(slow) weighted by the *raw* pixel values, pixel centres at i + 0.5; ``intensity`` the raw sum
(DIALS ``intensity.sum.value``; its variance is taken equal to it, Poisson with gain 1); in
addition ``background`` is the mean of the local box means of its pixels, ``intensity_net`` the
sum of (I − local mean) and ``snr`` = intensity_net / sqrt(intensity). Sentinel and masked
pixels never count, neither as candidates nor in any box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .geometry import SeriesConstants, sentinel_for


@dataclass
class SpotList:
    """Spots of one frame (all arrays of length ``n``)."""

    x: np.ndarray
    """Centroid along fast (pixels, pixel centres at i + 0.5)."""
    y: np.ndarray
    """Centroid along slow."""
    intensity: np.ndarray
    """Sum of raw pixel values (counts)."""
    intensity_net: np.ndarray
    """Sum of pixel value minus local box mean."""
    background: np.ndarray
    """Mean local background per pixel."""
    n_pixels: np.ndarray
    peak: np.ndarray
    """Largest raw pixel value."""
    snr: np.ndarray
    dstar2: np.ndarray
    """d*² (Å⁻²) at the centroid; NaN without geometry."""
    n_strong_pixels: int = 0
    """Strong pixels before the size filters."""

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def d(self) -> np.ndarray:
        """d-spacing (Å); NaN without geometry, inf at the beam centre."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 / np.sqrt(self.dstar2)


@numba.njit(cache=True, inline="always")
def _valid(v, sentinel):
    return v != sentinel and v >= 0 and (v - v) == 0


@numba.njit(cache=True)
def _add_row(img, ok, sentinel, r, sign, cn, cs, cs2):
    nx = img.shape[1]
    for i in range(nx):
        v = img[r, i]
        if ok[r, i] and _valid(v, sentinel):
            f = float(v)
            cn[i] += sign
            cs[i] += sign * f
            cs2[i] += sign * f * f


@numba.njit(cache=True)
def dispersion_runs(img, ok, sentinel, kernel, nsig_b, nsig_s, min_count, gain, global_threshold):
    """Strong pixels of ``img`` as row runs: (run_y, run_x0, run_x1 inclusive, local_mean per
    strong pixel in raster order). ``ok``: uint8 detector mask (1 = usable)."""
    ny, nx = img.shape
    cn = np.zeros(nx, np.float64)
    cs = np.zeros(nx, np.float64)
    cs2 = np.zeros(nx, np.float64)
    pn = np.zeros(nx + 1, np.float64)
    ps = np.zeros(nx + 1, np.float64)
    ps2 = np.zeros(nx + 1, np.float64)
    cap = 1024
    run_y = np.empty(cap, np.int32)
    run_x0 = np.empty(cap, np.int32)
    run_x1 = np.empty(cap, np.int32)
    pcap = 4096
    bg = np.empty(pcap, np.float64)
    n_runs = 0
    n_px = 0
    for r in range(min(kernel, ny)):
        _add_row(img, ok, sentinel, r, 1.0, cn, cs, cs2)
    sq2b = nsig_b * gain
    for y in range(ny):
        if y + kernel < ny:
            _add_row(img, ok, sentinel, y + kernel, 1.0, cn, cs, cs2)
        if y - kernel - 1 >= 0:
            _add_row(img, ok, sentinel, y - kernel - 1, -1.0, cn, cs, cs2)
        for i in range(nx):
            pn[i + 1] = pn[i] + cn[i]
            ps[i + 1] = ps[i] + cs[i]
            ps2[i + 1] = ps2[i] + cs2[i]
        in_run = False
        for i in range(nx):
            strong = False
            v = img[y, i]
            if ok[y, i] and _valid(v, sentinel) and v > global_threshold:
                lo = max(i - kernel, 0)
                hi = min(i + kernel + 1, nx)
                m = pn[hi] - pn[lo]
                if m >= min_count and m > 1:
                    x = ps[hi] - ps[lo]
                    if x >= 0:
                        yy = ps2[hi] - ps2[lo]
                        fv = float(v)
                        a = m * yy - x * x - x * (m - 1.0)
                        c = x * sq2b * np.sqrt(2.0 * (m - 1.0))
                        b = m * fv - x
                        d = nsig_s * np.sqrt(gain * x * m)
                        if a > c and b > d:
                            strong = True
                            if n_px == pcap:
                                pcap *= 2
                                nb = np.empty(pcap, np.float64)
                                nb[:n_px] = bg[:n_px]
                                bg = nb
                            bg[n_px] = x / m
                            n_px += 1
            if strong:
                if in_run:
                    run_x1[n_runs - 1] = i
                else:
                    if n_runs == cap:
                        cap *= 2
                        a1 = np.empty(cap, np.int32)
                        a1[:n_runs] = run_y[:n_runs]
                        run_y = a1
                        a2 = np.empty(cap, np.int32)
                        a2[:n_runs] = run_x0[:n_runs]
                        run_x0 = a2
                        a3 = np.empty(cap, np.int32)
                        a3[:n_runs] = run_x1[:n_runs]
                        run_x1 = a3
                    run_y[n_runs] = y
                    run_x0[n_runs] = i
                    run_x1[n_runs] = i
                    n_runs += 1
                    in_run = True
            else:
                in_run = False
    return run_y[:n_runs], run_x0[:n_runs], run_x1[:n_runs], bg[:n_px]


@numba.njit(cache=True)
def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@numba.njit(cache=True)
def label_runs(run_y, run_x0, run_x1):
    """Component label (0..n_comp−1) of each run, 8-connectivity; runs must be in raster order."""
    n = run_y.shape[0]
    parent = np.arange(n)
    prev_start = 0
    prev_end = 0
    cur_start = 0
    while cur_start < n:
        y = run_y[cur_start]
        cur_end = cur_start
        while cur_end < n and run_y[cur_end] == y:
            cur_end += 1
        if prev_end > prev_start and run_y[prev_start] == y - 1:
            j = prev_start
            for r in range(cur_start, cur_end):
                while j < prev_end and run_x1[j] < run_x0[r] - 1:
                    j += 1
                jj = j
                while jj < prev_end and run_x0[jj] <= run_x1[r] + 1:
                    ra = _find(parent, r)
                    rb = _find(parent, jj)
                    if ra != rb:
                        if ra < rb:
                            parent[rb] = ra
                        else:
                            parent[ra] = rb
                    jj += 1
        prev_start = cur_start
        prev_end = cur_end
        cur_start = cur_end
    labels = np.empty(n, np.int64)
    root_label = np.full(n, -1, np.int64)
    n_comp = 0
    for r in range(n):
        root = _find(parent, r)
        if root_label[root] < 0:
            root_label[root] = n_comp
            n_comp += 1
        labels[r] = root_label[root]
    return labels, n_comp


@numba.njit(cache=True)
def _spot_sums(img, run_y, run_x0, run_x1, bg, labels, n_comp):
    npx = np.zeros(n_comp, np.int64)
    s = np.zeros(n_comp, np.float64)
    sx = np.zeros(n_comp, np.float64)
    sy = np.zeros(n_comp, np.float64)
    sb = np.zeros(n_comp, np.float64)
    peak = np.zeros(n_comp, np.float64)
    k = 0
    for r in range(run_y.shape[0]):
        c = labels[r]
        y = run_y[r]
        for i in range(run_x0[r], run_x1[r] + 1):
            v = float(img[y, i])
            npx[c] += 1
            s[c] += v
            sx[c] += v * (i + 0.5)
            sy[c] += v * (y + 0.5)
            sb[c] += bg[k]
            if v > peak[c]:
                peak[c] = v
            k += 1
    return npx, s, sx, sy, sb, peak


def find_spots(frame: np.ndarray, *, constants: SeriesConstants, kernel: int = 3, sigma_background: float = 6.0,
               sigma_strong: float = 3.0, min_local: int = 2, gain: float = 1.0, global_threshold: float = 0.0,
               min_spot_size: int = 3, max_spot_size: int = 1000, sentinel: int | float | None = None) -> SpotList:
    """Find spots in one frame (any integer or float dtype; the frame is never copied).

    Defaults are DIALS' (kernel_size 3 3, sigma_background 6, sigma_strong 3, min_local 2,
    gain 1, global_threshold 0, max_spot_size 1000; min_spot_size 3 as DIALS chooses for pixel
    array detectors). ``sentinel`` defaults to :func:`sentinel_for` the frame's dtype. Computed by
    the one-sweep :func:`~.fused.analyse_frame`; :func:`find_spots_reference` is the plain version.
    """
    from .fused import analyse_frame

    return analyse_frame(frame, constants=constants, kernel=kernel, sigma_background=sigma_background,
                         sigma_strong=sigma_strong, min_local=min_local, gain=gain, global_threshold=global_threshold,
                         min_spot_size=min_spot_size, max_spot_size=max_spot_size, sentinel=sentinel)[0]


def find_spots_reference(frame: np.ndarray, *, constants: SeriesConstants, kernel: int = 3,
                         sigma_background: float = 6.0, sigma_strong: float = 3.0, min_local: int = 2,
                         gain: float = 1.0, global_threshold: float = 0.0, min_spot_size: int = 3,
                         max_spot_size: int = 1000, sentinel: int | float | None = None) -> SpotList:
    """:func:`find_spots` computed by the separate, plain :func:`dispersion_runs` (reference)."""
    if frame.shape != constants.shape:
        raise ValueError(f"frame shape {frame.shape} does not match series shape {constants.shape}")
    sent = sentinel_for(frame.dtype) if sentinel is None else frame.dtype.type(sentinel)
    run_y, run_x0, run_x1, bg = dispersion_runs(frame, constants.ok, sent, int(kernel), float(sigma_background),
                                                float(sigma_strong), float(min_local), float(gain), float(global_threshold))
    return finish_spots(frame, run_y, run_x0, run_x1, bg, constants=constants, min_spot_size=min_spot_size,
                        max_spot_size=max_spot_size)


def finish_spots(frame: np.ndarray, run_y, run_x0, run_x1, bg, *, constants: SeriesConstants, min_spot_size: int,
                 max_spot_size: int) -> SpotList:
    """Components, per-spot sums and size filters from the strong-pixel runs."""
    labels, n_comp = label_runs(run_y, run_x0, run_x1)
    npx, s, sx, sy, sb, peak = _spot_sums(frame, run_y, run_x0, run_x1, bg, labels, n_comp)
    keep = (npx >= min_spot_size) & (npx <= max_spot_size)
    npx, s, sx, sy, sb, peak = (a[keep] for a in (npx, s, sx, sy, sb, peak))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(s > 0, sx / s, np.nan)
        y = np.where(s > 0, sy / s, np.nan)
        net = s - sb
        snr = np.where(s > 0, net / np.sqrt(s), 0.0)
    return SpotList(x=x, y=y, intensity=s, intensity_net=net, background=sb / np.maximum(npx, 1),
                    n_pixels=npx.astype(np.int32), peak=peak, snr=snr,
                    dstar2=constants.spot_dstar2(x=x, y=y), n_strong_pixels=int(len(bg)))
