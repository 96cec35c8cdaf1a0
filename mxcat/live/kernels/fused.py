"""One sweep over a frame for spots, pixel statistics and the radial profile (``analyse_frame``).

Same definitions as :mod:`.spots`, :mod:`.stats` and :mod:`.radial` (see their docstrings); this
module only changes how they are computed. Each frame row is read once, when it enters the
(2k+1)-row window of the dispersion filter: its validity (mask, sentinel, negative, NaN, infinite) is tested
once and the row is stored, cleaned (invalid → 0, plus a 0/1 flag), in a ring buffer of 2k+2 rows;
the same step accumulates valid/saturated counts, the stride-4 background sample, the ice-band
sums and the radial sums. Column sums are updated from the ring (add the entering row, remove the
leaving one, no second validity test), then per-row prefix sums give the box sums.

Integer frames use integer accumulators (int64): box sums are then exact and, converted to
float64, identical to the float64 sums of the reference code as long as they stay below 2^53;
when a valid value could break that (> sqrt(2^53)/(2k+1)), the frame is redone in float64, which
is the reference arithmetic. Float frames use float64 throughout, in the reference order. The
significance test (I − mean > σ_s·sqrt(g·mean)) is first checked without square roots with a
safety margin, and the exact expressions are evaluated only for pixels that may pass, so the
strong-pixel set is unchanged. That pre-check runs as a separate branch-free loop over shifted
row views (no index wraparound, so LLVM vectorises it) writing 0/1 flags, and a scan over the
flags 8 at a time does the exact test and run building for the few candidates. Ice-band sums
walk precomputed per-row runs of constant ice code (same additions, same order). Radial sums of integer frames are exact integers; for float frames
they agree with :func:`.radial.radial_sums` to rounding. Buffers live in a :class:`Workspace`
reused from frame to frame (one per worker thread; not thread-safe).
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import types
from numba.extending import overload

from .geometry import SeriesConstants, sentinel_for, zero_of


def _acc(v):  # pragma: no cover - replaced in compiled code
    return v


@overload(_acc, jit_options={"cache": True})
def _acc_ol(v):
    if isinstance(v, types.Integer):
        return lambda v: np.int64(v)
    return lambda v: np.float64(v)


class Workspace:
    """Reusable per-worker buffers for :func:`analyse_frame` (sized on first use)."""

    def __init__(self) -> None:
        self._key = None
        self.bufs: dict = {}
        self.runs: tuple | None = None

    def get(self, shape: tuple[int, int], kernel: int, frame_dtype: np.dtype, acc_dtype: np.dtype, stride: int) -> dict:
        key = (shape, kernel, np.dtype(frame_dtype), np.dtype(acc_dtype), stride)
        if key != self._key:
            ny, nx = shape
            nring = 2 * kernel + 2
            ns = ((ny + stride - 1) // stride) * ((nx + stride - 1) // stride)
            self.bufs = dict(
                ring_v=np.zeros((nring, nx), frame_dtype), ring_f=np.zeros((nring, nx), np.uint8),
                col=np.zeros((3, nx), acc_dtype), pre=np.zeros((3, nx + 1), np.float64),
                sample=np.empty(ns, np.float64), flags=np.zeros(((nx + 7) // 8) * 8, np.uint8),
            )
            self._key = key
        if self.runs is None:
            self.runs = (np.empty(4096, np.int32), np.empty(4096, np.int32), np.empty(4096, np.int32),
                         np.empty(16384, np.float64))
        return self.bufs


_local = threading.local()


def default_workspace() -> Workspace:
    """A workspace private to the calling thread (used when none is passed)."""
    ws = getattr(_local, "ws", None)
    if ws is None:
        ws = _local.ws = Workspace()
    return ws


@numba.njit(cache=True)
def _row_runs(tab, skip):
    """Runs of equal values of ``tab`` along each row, leaving out runs of value ``skip`` (all
    negative values when ``skip`` < 0): (row pointer (ny+1), start, stop, value), raster order."""
    ny, nx = tab.shape
    ptr = np.zeros(ny + 1, np.int64)
    start = np.empty(0, np.int32)
    stop = np.empty(0, np.int32)
    value = np.empty(0, np.int32)
    n = 0
    for pss in range(2):
        n = 0
        for r in range(ny):
            i = 0
            while i < nx:
                val = tab[r, i]
                j = i + 1
                while j < nx and tab[r, j] == val:
                    j += 1
                if not (val == skip or (skip < 0 and val < 0)):
                    if pss == 1:
                        start[n] = i
                        stop[n] = j
                        value[n] = val
                    n += 1
                i = j
            if pss == 0:
                ptr[r + 1] = n
        if pss == 0:
            start = np.empty(n, np.int32)
            stop = np.empty(n, np.int32)
            value = np.empty(n, np.int32)
    return ptr, start, stop, value


def _tables(constants: SeriesConstants) -> tuple:
    """Compact per-series tables: radial bin as int16/int32, ice code int8 (+k band, −k neighbour),
    and per-row runs of constant non-zero ice code."""
    t = getattr(constants, "_fused_tables", None)
    if t is None:
        nb = constants.n_bins
        bins = constants.radial_bin.astype(np.int16 if nb < 32767 else np.int32)
        if constants.has_geometry and constants.ice_band is not None and len(constants.ice_dstar2):
            code = np.where(constants.ice_band > 0, constants.ice_band, -constants.ice_near).astype(np.int8)
            n_rings = len(constants.ice_dstar2)
        else:
            code = np.zeros((1, 1), np.int8)
            n_rings = 0
        t = (bins, code, n_rings, _row_runs(code, 0))
        constants._fused_tables = t
    return t


@numba.njit(cache=True)
def _ingest(img, ok, sentinel, r, slot, ring_v, ring_f, bins, weight, use_weight, code, n_rings, saturation,
            stride, sample, n_sample, band, nbr, rsum, rcnt, stat, vmx, irun):
    """Clean row ``r`` into ring slot ``slot`` and accumulate the per-pixel statistics.
    ``stat``: [n_valid, n_sat] (int64); ``vmx``: [largest valid value]; ``irun``: per-row runs of
    non-zero ice code (see :func:`_row_runs`)."""
    nx = img.shape[1]
    src = img[r]
    okr = ok[r]
    rv = ring_v[slot]
    rf = ring_f[slot]
    n_valid = 0
    n_sat = 0
    vmax = vmx[0]
    zero = zero_of(rv[0])
    # branch-free (vectorised) validity test
    for i in range(nx):
        v = src[i]
        good = (okr[i] != 0) & (v != sentinel) & (v >= 0) & ((v - v) == 0)
        vc = v if good else zero
        rv[i] = vc
        rf[i] = good
        n_valid += good
        vmax = max(vmax, vc)
    stat[0] += n_valid
    # saturation, sample, ice bands: float64 in raster order (as stats.pixel_pass)
    for i in range(nx):
        n_sat += (rf[i] != 0) & (float(rv[i]) >= saturation)
    stat[1] += n_sat
    if r % stride == 0:
        for i in range(0, nx, stride):
            if rf[i] != 0:
                sample[n_sample] = float(rv[i])
                n_sample += 1
    if n_rings > 0:
        iptr, ist, isp, ival = irun
        for t in range(iptr[r], iptr[r + 1]):
            k = ival[t]
            acc = band if k > 0 else nbr
            kk = k if k > 0 else -k
            # same additions in the same order as per-pixel updates of acc[kk], kept in registers
            c0 = acc[kk, 0]
            c1 = acc[kk, 1]
            c2 = acc[kk, 2]
            for i in range(ist[t], isp[t]):
                # invalid pixels hold 0 in the ring: adding +0.0 to these non-negative sums
                # leaves them bit-identical, so no branch is needed
                f = float(rv[i])
                c0 += float(rf[i])
                c1 += f
                c2 += f * f
            acc[kk, 0] = c0
            acc[kk, 1] = c1
            acc[kk, 2] = c2
    # radial profile
    if use_weight:
        br = bins[r]
        wr = weight[r]
        for i in range(nx):
            b = br[i]
            if b >= 0 and rf[i] != 0:
                rsum[b] += rv[i] * wr[i]
                rcnt[b] += 1
    else:
        br = bins[r]
        cur = -1
        acc = _acc(zero)
        cnt = 0
        for i in range(nx):
            b = br[i]
            if b != cur:
                if cur >= 0:
                    rsum[cur] += acc
                    rcnt[cur] += cnt
                cur = b
                acc = _acc(zero)
                cnt = 0
            acc += _acc(rv[i])
            cnt += rf[i]
        if cur >= 0:
            rsum[cur] += acc
            rcnt[cur] += cnt
    vmx[0] = vmax
    return n_sample


@numba.njit(cache=True, inline="always")
def _cand(v, f, pn, ps, lo, hi, global_threshold, min_count, bmin, q):
    m = float(pn[hi] - pn[lo])
    x = float(ps[hi] - ps[lo])
    b = m * float(v) - x
    return ((f != 0) & (v > global_threshold) & (m >= min_count) & (m > 1.0) & (x >= 0.0)
            & (b > bmin) & (b * b >= q * x * m))


@numba.njit(cache=True)
def fused_pass(img, ok, sentinel, kernel, nsig_b, nsig_s, min_count, gain, global_threshold,
               bins, weight, use_weight, code, n_rings, saturation, stride,
               ring_v, ring_f, col, pre, sample, flags, rsum, rcnt, run_y, run_x0, run_x1, bg, irun):
    """The whole per-pixel work of one frame. Returns (n_runs, n_px, run arrays, bg, n_valid,
    n_sat, vmax, band, nbr, n_sample); ``rsum``/``rcnt`` are filled in place. Runs and strong
    pixels beyond the capacity of the given arrays are counted, not stored: the caller then calls
    again with larger ones (arrays are never reallocated in here: that slows the whole loop)."""
    ny, nx = img.shape
    nring = ring_v.shape[0]
    cn = col[0]
    cs = col[1]
    cs2 = col[2]
    pn = pre[0]
    ps = pre[1]
    ps2 = pre[2]
    zero = zero_of(cs[0])
    for i in range(nx):
        cn[i] = zero
        cs[i] = zero
        cs2[i] = zero
    pn[0] = 0.0
    ps[0] = 0.0
    ps2[0] = 0.0
    rsum[:] = 0
    rcnt[:] = 0
    band = np.zeros((n_rings + 1, 3), np.float64)
    nbr = np.zeros((n_rings + 1, 3), np.float64)
    statv = np.zeros(2, np.int64)
    vmx = np.zeros(1, ring_v.dtype)
    row_max2 = 0.0
    n_sample = 0
    cap = run_y.shape[0]
    pcap = bg.shape[0]
    n_runs = 0
    n_px = 0
    sq2b = nsig_b * gain
    s2g = nsig_s * nsig_s * gain
    filt = nsig_s >= 0.0 and gain >= 0.0
    bmin = 0.0 if filt else -np.inf
    q = 0.999 * s2g if filt else -1.0
    nw = flags.shape[0] // 8
    flags64 = flags.view(np.uint64)
    sqrt_tab = np.empty((2 * kernel + 1) ** 2 + 1, np.float64)
    for m in range(sqrt_tab.shape[0]):
        sqrt_tab[m] = np.sqrt(2.0 * (m - 1.0)) if m >= 1 else 0.0
    # rows 0..kernel-1 enter the window before the first output row
    for r in range(min(kernel, ny)):
        slot = r % nring
        n_sample = _ingest(img, ok, sentinel, r, slot, ring_v, ring_f, bins, weight, use_weight, code, n_rings,
                           saturation, stride, sample, n_sample, band, nbr, rsum, rcnt, statv, vmx, irun)
        for i in range(nx):
            w = _acc(ring_v[slot, i])
            cn[i] = cn[i] + ring_f[slot, i]
            cs[i] = cs[i] + w
            cs2[i] = cs2[i] + w * w
    for y in range(ny):
        ra = y + kernel
        rr = y - kernel - 1
        if ra < ny:
            sa = ra % nring
            n_sample = _ingest(img, ok, sentinel, ra, sa, ring_v, ring_f, bins, weight, use_weight, code, n_rings,
                               saturation, stride, sample, n_sample, band, nbr, rsum, rcnt, statv, vmx, irun)
            va = ring_v[sa]
            fa = ring_f[sa]
            if rr >= 0:
                vr = ring_v[rr % nring]
                fr = ring_f[rr % nring]
                for i in range(nx):
                    w = _acc(va[i])
                    u = _acc(vr[i])
                    cn[i] = (cn[i] + fa[i]) - fr[i]
                    cs[i] = (cs[i] + w) - u
                    cs2[i] = (cs2[i] + w * w) - u * u
            else:
                for i in range(nx):
                    w = _acc(va[i])
                    cn[i] = cn[i] + fa[i]
                    cs[i] = cs[i] + w
                    cs2[i] = cs2[i] + w * w
        elif rr >= 0:
            vr = ring_v[rr % nring]
            fr = ring_f[rr % nring]
            for i in range(nx):
                u = _acc(vr[i])
                cn[i] = cn[i] - fr[i]
                cs[i] = cs[i] - u
                cs2[i] = cs2[i] - u * u
        a0 = zero
        a1 = zero
        a2 = zero
        pn1 = pn[1:]
        ps1 = ps[1:]
        ps21 = ps2[1:]
        for i in range(nx):
            a0 = a0 + cn[i]
            a1 = a1 + cs[i]
            a2 = a2 + cs2[i]
            pn1[i] = float(a0)
            ps1[i] = float(a1)
            ps21[i] = float(a2)
        if float(a2) > row_max2:
            row_max2 = float(a2)
        sy = y % nring
        rv = ring_v[sy]
        rf = ring_f[sy]
        # branch-free pre-selection (vectorised): every cheap condition of the reference test
        # plus a necessary (margin 0.999) square-root-free form of the significance test
        # interior pixels through shifted views (unit-stride, no index wraparound: vectorises)
        w2 = 2 * kernel + 1
        n_in = nx - 2 * kernel
        if n_in > 0:
            vv = rv[kernel:]
            ff = rf[kernel:]
            fl = flags[kernel:]
            pnh = pn[w2:]
            psh = ps[w2:]
            for j in range(n_in):
                v = float(vv[j])
                m = pnh[j] - pn[j]
                x = psh[j] - ps[j]
                b = m * v - x
                fl[j] = ((ff[j] != 0) & (v > global_threshold) & (m >= min_count) & (m > 1.0) & (x >= 0.0)
                         & (b > bmin) & (b * b >= q * x * m))
        e1 = min(kernel, nx)
        e2 = max(nx - kernel, e1)
        for ie in range(e1 + nx - e2):
            i = ie if ie < e1 else e2 + (ie - e1)
            v = float(rv[i])
            lo = max(i - kernel, 0)
            hi = min(i + kernel + 1, nx)
            m = pn[hi] - pn[lo]
            x = ps[hi] - ps[lo]
            b = m * v - x
            flags[i] = ((rf[i] != 0) & (v > global_threshold) & (m >= min_count) & (m > 1.0) & (x >= 0.0)
                        & (b > bmin) & (b * b >= q * x * m))
        in_run = False
        for w in range(nw):
            if flags64[w] == 0:
                in_run = False
                continue
            for i in range(8 * w, 8 * w + 8):
                strong = False
                if flags[i] != 0:
                    lo = max(i - kernel, 0)
                    hi = min(i + kernel + 1, nx)
                    m = float(pn[hi] - pn[lo])
                    x = float(ps[hi] - ps[lo])
                    b = m * float(rv[i]) - x
                    yy = float(ps2[hi] - ps2[lo])
                    a = m * yy - x * x - x * (m - 1.0)
                    mi = int(m)
                    sq = sqrt_tab[mi] if mi < sqrt_tab.shape[0] else np.sqrt(2.0 * (m - 1.0))
                    c = x * sq2b * sq
                    d = nsig_s * np.sqrt(gain * x * m)
                    if a > c and b > d:
                        strong = True
                        if n_px < pcap:
                            bg[n_px] = x / m
                        n_px += 1
                if strong:
                    if in_run:
                        if n_runs <= cap:
                            run_x1[n_runs - 1] = i
                    else:
                        if n_runs < cap:
                            run_y[n_runs] = y
                            run_x0[n_runs] = i
                            run_x1[n_runs] = i
                        n_runs += 1
                        in_run = True
                else:
                    in_run = False
    return (n_runs, n_px, run_y, run_x0, run_x1, bg, statv[0], statv[1], float(vmx[0]), row_max2, band, nbr,
            n_sample)


_TWO53 = float(2**53)


def analyse_frame(frame: np.ndarray, *, constants: SeriesConstants, workspace: Workspace | None = None,
                  kernel: int = 3, sigma_background: float = 6.0, sigma_strong: float = 3.0, min_local: int = 2,
                  gain: float = 1.0, global_threshold: float = 0.0, min_spot_size: int = 3, max_spot_size: int = 1000,
                  saturation_value: float | None = None, hit_min_spots: int = 30,
                  sentinel: int | float | None = None):
    """Spots, statistics and radial profile of one frame in one sweep: ``(SpotList, FrameStats,
    RadialProfile)``, equal to ``find_spots``, ``frame_statistics`` and ``radial_profile`` with
    the same arguments (see module docstring)."""
    from .radial import RadialProfile
    from .spots import finish_spots
    from .stats import finish_statistics

    if frame.shape != constants.shape:
        raise ValueError(f"frame shape {frame.shape} does not match series shape {constants.shape}")
    ws = workspace if workspace is not None else default_workspace()
    sent = sentinel_for(frame.dtype) if sentinel is None else frame.dtype.type(sentinel)
    r = _pass(frame, constants, ws, sent, kernel, sigma_background, sigma_strong, min_local, gain, global_threshold,
              saturation_value)
    if np.issubdtype(frame.dtype, np.integer):
        ny, nx = frame.shape
        vmax, row_max2 = r[2][8], r[2][9]
        if vmax * vmax * float((2 * kernel + 2) * nx) >= float(2**62) or row_max2 >= _TWO53:
            # integer sums could overflow or would differ from the float64 reference: redo in float64
            r = _pass(frame.astype(np.float64), constants, ws, np.float64(sent), kernel, sigma_background,
                      sigma_strong, min_local, gain, global_threshold, saturation_value)
    rsum, rcnt, out = r
    n_runs, n_px, run_y, run_x0, run_x1, bg, n_valid, n_sat, _, _, band, nbr, n_sample = out
    ws.runs = (run_y, run_x0, run_x1, bg)
    spots = finish_spots(frame, run_y[:n_runs], run_x0[:n_runs], run_x1[:n_runs], bg[:n_px], constants=constants,
                         min_spot_size=min_spot_size, max_spot_size=max_spot_size)
    sample = ws.bufs["sample"][:n_sample]
    stats = finish_statistics(spots=spots, constants=constants, n_valid=int(n_valid), n_sat=int(n_sat), band=band,
                              nbr=nbr, sample=sample, hit_min_spots=hit_min_spots)
    prof = RadialProfile(axis=constants.radial_axis, edges=constants.radial_edges, sums=rsum.astype(np.float64),
                         n_pixels=rcnt)
    return spots, stats, prof


def _pass(frame, constants, ws, sent, kernel, sigma_background, sigma_strong, min_local, gain, global_threshold,
          saturation_value):
    integer = np.issubdtype(frame.dtype, np.integer)
    acc = np.int64 if integer else np.float64
    stride = 4
    b = ws.get(frame.shape, int(kernel), frame.dtype, acc, stride)
    bins, code, n_rings, irun = _tables(constants)
    use_weight = constants.radial_weight is not None
    weight = constants.radial_weight if use_weight else np.ones((1, 1), np.float32)
    rsum = np.zeros(constants.n_bins, np.float64 if (use_weight or not integer) else np.int64)
    rcnt = np.zeros(constants.n_bins, np.int64)
    sat = np.inf if saturation_value is None else float(saturation_value)
    while True:
        ry, rx0, rx1, bg = ws.runs
        out = fused_pass(frame, constants.ok, sent, int(kernel), float(sigma_background), float(sigma_strong),
                         float(min_local), float(gain), float(global_threshold), bins, weight, use_weight, code, n_rings,
                         sat, stride, b["ring_v"], b["ring_f"], b["col"], b["pre"], b["sample"], b["flags"], rsum, rcnt,
                         ry, rx0, rx1, bg, irun)
        n_runs, n_px = out[0], out[1]
        if n_runs <= len(ry) and n_px <= len(bg):
            return rsum, rcnt, out
        # more strong pixels than ever before in this workspace: larger buffers, same frame again
        nr = max(2 * n_runs, len(ry))
        ws.runs = (np.empty(nr, np.int32), np.empty(nr, np.int32), np.empty(nr, np.int32),
                   np.empty(max(2 * n_px, len(bg)), np.float64))
