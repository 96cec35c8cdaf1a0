"""Spot components of the radial analysis: strong pixels joined from the seed blocks, on per-block bit masks.

The definitions are those of :mod:`.radial_spots`. A pixel is *strong* when it is valid and above
``thr_lo`` of its block's bin. A *seed* pixel is valid and above ``thr_hi``. A spot candidate is
an 8-connected component of strong pixels that holds a seed pixel. Components are started from the
seed blocks the sweep listed, in their order, and within a block in pixel order.

How it is computed:

* **One 32-bit word per 2x4 block** (``marks``): bits 0-7 are its strong pixels (bit 4·r + c for
  pixel (2·by + r, 4·bx + c)), bit 16 says they are known, bits 8-15 are its pixels already taken
  by a component. Strong bits are computed when a component first needs them and kept for the
  frame; the detector mask enters as per-block bits of usable pixels (``ok_bits``, None without a
  mask), so the per-pixel mask is not read here.
* **A component grows in a 64x64-pixel window** around its seed block, one 64-bit word per row.
  This is binary reconstruction by iterated conditional dilation (Vincent (1993), IEEE Trans.
  Image Process. 2, 176-201), done on a worklist of rows: a row is ORed with the rows above and
  below, shifted by one column both ways and ANDed with the strong bits, again until it stays
  (its own horizontal closure); when it changed, the rows above and below are done again. It
  stops when no row is left to do, after about two passes per row of the component, each a few
  word operations, where a pixel flood fill tests nine neighbours per pixel.
* **Components that reach the window's edge** (more than ~28 pixels from their seed block) are
  grown again by a breadth-first walk over blocks (:func:`_grow_wide`), which has no size limit.
  It dilates a block's new pixels into its 8 neighbour blocks with the same bit operations.
* **Rows not decoded yet.** Only rows below ``row_limit`` are read. A component that would need
  a block with a row at or beyond it is left untaken, and the call returns so it can be called
  again once the band below is decoded (see :func:`grow_spots`). Strong bits are only computed
  for whole decoded blocks, so those already known stay valid.

The caller zeroes ``marks`` of a band's block rows before the band's first call: no clearing
pass, and a frame abandoned half-way leaves nothing that the next one reads.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from .blocks import _valid

KNOWN = 1 << 16
"""Bit of a ``marks`` word: the block's strong bits (0-7) are computed."""
WIN_ROWS = 64
"""Rows of the window; a component that reaches row 1 or 62 (or column 0 or 63) is grown wide, so
rows 0 and 63 stay empty."""
WIN_ROW0 = 30
"""Window row of the seed block's first row (even: window block rows are frame block rows)."""
WIN_COL0 = 28
"""Window column of the seed block's first column (a multiple of 4: window nibbles are blocks)."""

_ONE = np.uint64(1)
_NIBBLE = np.uint64(15)
_EDGE = np.uint64(1) | (np.uint64(1) << np.uint64(63))  # window columns 0 and 63

_GROWN, _WAITING, _OUTSIDE, _NO_ROOM, _OUT_FULL = 0, 1, 2, 3, 4


@numba.njit(cache=True, inline="always")
def _above(v, thr, sentinel):
    """1 when ``v`` is valid (:func:`.blocks._valid`; the mask is applied per block) and above
    ``thr``, else 0. Scalars only: an inlined helper that takes arrays makes numba count
    references around each call."""
    return np.int64(_valid(v, 1, sentinel) & (float(v) > thr))


@numba.njit(cache=True, inline="always")
def _bits4(a, b, c, d, thr, sentinel):
    """Bits 0-3: which of four pixel values pass :func:`_above`."""
    return (_above(a, thr, sentinel) | (_above(b, thr, sentinel) << 1) | (_above(c, thr, sentinel) << 2)
            | (_above(d, thr, sentinel) << 3))


@numba.njit(cache=True)
def block_bits(img, sentinel, ok_bits, by, bx, thr):
    """Bits 4·r + c of the pixels (2·by + r, 4·bx + c) of block (by, bx) that are valid, usable
    (``ok_bits[by, bx]``; None: no detector mask) and above ``thr``; pixels outside the frame are 0."""
    ny, nx = img.shape
    j0 = 2 * by
    i0 = 4 * bx
    bits = 0
    for r in range(min(2, ny - j0)):
        for c in range(min(4, nx - i0)):
            bits |= _above(img[j0 + r, i0 + c], thr, sentinel) << (4 * r + c)
    if ok_bits is not None:
        bits &= np.int64(ok_bits[by, bx])
    return bits


@numba.njit(cache=True)
def _marks_of(img, sentinel, bbin, ok_bits, thr_lo, mf, nbx, by, bx):
    """The ``marks`` word of block (by, bx), its strong bits computed first when not known."""
    t = by * nbx + bx
    m = np.int64(mf[t])
    if m & KNOWN == 0:
        b = bbin[by, bx]
        m |= KNOWN | block_bits(img, sentinel, ok_bits, by, bx, thr_lo[b] if b >= 0 else np.inf)
        mf[t] = m
    return m


@numba.njit(cache=True)
def _grow_wide(img, sentinel, bbin, ok_bits, thr_lo, mf, nby, nbx, stack, slot, by, bx, bit, row_limit):
    """The component of pixel ``bit`` of block (by, bx), breadth-first over blocks, marking its
    pixels taken. ``stack`` rows: block row, block column, the component's pixels in the block,
    those not yet spread to the neighbours, queue. ``slot`` maps a block to its entry; it needs
    no clearing, because an entry is checked against its block. Returns (status, entries):
    ``_GROWN``; ``_WAITING``, with the marks undone, when a block with a row at or beyond
    ``row_limit`` would be needed; ``_NO_ROOM`` when ``stack`` is too small."""
    ny = img.shape[0]
    cap = stack.shape[1]
    sby = stack[0]
    sbx = stack[1]
    smask = stack[2]
    spend = stack[3]
    queue = stack[4]
    t0 = by * nbx + bx
    mf[t0] |= (1 << bit) << 8
    sby[0] = by
    sbx[0] = bx
    smask[0] = 1 << bit
    spend[0] = 1 << bit
    slot[t0] = 0
    n_ent = 1
    queue[0] = 0
    qh = 0
    qt = 1
    while qh < qt:
        if n_ent + 9 > cap or qt + 9 > cap:
            return _NO_ROOM, n_ent
        e = queue[qh]
        qh += 1
        p = np.int64(spend[e])
        spend[e] = 0
        eby = np.int64(sby[e])
        ebx = np.int64(sbx[e])
        low = p >> 4
        if low != 0 and 2 * eby + 2 < ny and min(2 * eby + 4, ny) > row_limit:
            for k in range(n_ent):
                mf[sby[k] * nbx + sbx[k]] &= ~(smask[k] << 8)
            return _WAITING, 0
        x0 = (p & 15) << 4  # the two pixel rows on 12 columns: left neighbour, own block, right neighbour
        x1 = low << 4
        h0 = x0 | (x0 << 1) | (x0 >> 1)
        h1 = x1 | (x1 << 1) | (x1 >> 1)
        hh = h0 | h1
        for dc in range(3):
            tbx = ebx + dc - 1
            if tbx < 0 or tbx >= nbx:
                continue
            above = ((h0 >> (4 * dc)) & 15) << 4  # into the lower row of the block above
            own = (hh >> (4 * dc)) & 15
            below = (h1 >> (4 * dc)) & 15  # into the upper row of the block below
            for dr in range(3):
                tby = eby + dr - 1
                dil = above if dr == 0 else ((own | (own << 4)) if dr == 1 else below)
                if dil == 0 or tby < 0 or tby >= nby:
                    continue
                m = _marks_of(img, sentinel, bbin, ok_bits, thr_lo, mf, nbx, tby, tbx)
                new = dil & m & ~(m >> 8) & 255
                if new == 0:
                    continue
                t = tby * nbx + tbx
                mf[t] = m | (new << 8)
                s = slot[t]
                if s < 0 or s >= n_ent or sby[s] != tby or sbx[s] != tbx:
                    s = n_ent
                    n_ent += 1
                    slot[t] = s
                    sby[s] = tby
                    sbx[s] = tbx
                    smask[s] = 0
                    spend[s] = 0
                smask[s] |= new
                if spend[s] == 0:
                    queue[qt] = s
                    qt += 1
                spend[s] |= new
    return _GROWN, n_ent


@numba.njit(cache=True)
def grow_spots(img, sentinel, bbin, ok_bits, thr_lo, thr_hi, mu, seeds, n_seed, max_spot_size, marks, win, stack,
               slot, out, state, row_limit, window=True):
    """Components of strong pixels that contain a seed pixel, from the seed blocks ``seeds[:n_seed]``
    (flat block indices by·nbx + bx), in seed order. Per component one row of ``out``: pixels,
    raw sum, value-weighted x and y sums (pixel centres at i + 0.5, j + 0.5), background sum (μ
    of each pixel's bin), peak. Components larger than ``max_spot_size`` are walked to their end
    (so no later seed restarts them) and dropped.

    Buffers: ``marks`` (block rows x block columns, uint32, zero where not yet used this frame,
    see the module docstring); ``win`` (3, 64) uint64, zero, and left zero; ``stack`` (5, n)
    int32 and ``slot`` (one int32 per block, any content) for components grown wide. With
    ``window`` False every component is grown wide (for tests).

    Resumable: ``state`` = [next seed, components so far] (zeros to start) is updated. Only rows
    below ``row_limit`` are read. A component that needs a row at or beyond it is left untaken
    and the call returns 1; call again once more rows are there. Returns 0 when all seeds are
    done, −1 when ``stack`` is too small and −2 when ``out`` is. In both cases zero ``marks`` and
    start again with a larger one. The buffers are never reallocated here: a reassigned array
    makes numba's loops several times slower."""
    ny, nx = img.shape
    nby, nbx = marks.shape
    mf = marks.reshape(-1)
    imgf = img.reshape(-1)
    S = win[0]  # strong bits of the window rows (known where K says so)
    C = win[1]  # the component
    K = win[2]  # per window block row: the columns whose strong bits are in S
    cap_out = out.shape[0]
    n_seed = min(n_seed, seeds.shape[0])
    q = state[0]
    n_out = state[1]
    status = _GROWN
    while q < n_seed:
        sq = seeds[q]
        by = sq // nbx
        bx = sq - by * nbx
        m = np.int64(mf[sq])
        if m & KNOWN == 0:
            m = _marks_of(img, sentinel, bbin, ok_bits, thr_lo, mf, nbx, by, bx)
        free = m & ~(m >> 8) & 255  # strong pixels no component has taken: only they can seed one
        if free == 0:
            q += 1
            continue
        b = bbin[by, bx]
        th = thr_hi[b] if b >= 0 else np.inf
        seed_bits = 0
        x = free
        while x != 0:  # a strong pixel is valid and usable: a seed when above thr_hi too
            k = np.int64(trailing_zeros(x))
            x &= x - 1
            if float(img[2 * by + (k >> 2), 4 * bx + (k & 3)]) > th:
                seed_bits |= 1 << k
        wr0 = 2 * by - WIN_ROW0  # frame row of window row 0
        wc0 = 4 * bx - WIN_COL0
        wby0 = by - WIN_ROW0 // 2
        wbx0 = bx - WIN_COL0 // 4
        klo = WIN_ROWS
        khi = -1
        for bit in range(8):
            if ((seed_bits >> bit) & 1) == 0 or ((mf[sq] >> (8 + bit)) & 1) != 0:
                continue
            status = _GROWN if window else _OUTSIDE
            lo = WIN_ROW0 + (bit >> 2)
            hi = lo
            if window:
                C[lo] = _ONE << np.uint64(WIN_COL0 + (bit & 3))
            pend = np.uint64(7) << np.uint64(lo - 1) if window else np.uint64(0)  # rows to (re)do
            while status == _GROWN and pend != 0:
                r = np.int64(trailing_zeros(pend))
                pend &= pend - _ONE
                fr = wr0 + r  # the frame row done now: its block must be decoded
                if fr < ny and min((fr | 1) + 1, ny) > row_limit:
                    status = _WAITING
                    break
                t = C[r - 1] | C[r + 1]
                n = C[r]
                if (t | n) == 0:
                    continue
                wbr = r >> 1
                while True:  # the row's closure: dilate, AND with the strong bits, until it stays
                    x = t | n
                    d = x | (x << _ONE) | (x >> _ONE)
                    need = d & ~K[wbr]
                    while need != 0:  # strong bits of the blocks under d not in the window yet
                        k = np.int64(trailing_zeros(need)) >> 2
                        tby = wby0 + wbr
                        tbx = wbx0 + k
                        bits = 0
                        if 0 <= tby < nby and 0 <= tbx < nbx:
                            tt = tby * nbx + tbx
                            mm = np.int64(mf[tt])
                            if mm & KNOWN == 0:  # _marks_of written out: the call costs ~20 % here
                                tb = bbin[tby, tbx]
                                th = thr_lo[tb] if tb >= 0 else np.inf
                                if 2 * tby + 1 < ny and 4 * tbx + 3 < nx:  # a whole block, inline
                                    u = np.uintp(2 * tby * nx + 4 * tbx)
                                    v = np.uintp(u + nx)
                                    bb = (_bits4(imgf[u], imgf[u + 1], imgf[u + 2], imgf[u + 3], th, sentinel)
                                          | (_bits4(imgf[v], imgf[v + 1], imgf[v + 2], imgf[v + 3], th, sentinel) << 4))
                                    if ok_bits is not None:
                                        bb &= np.int64(ok_bits[tby, tbx])
                                else:
                                    bb = block_bits(img, sentinel, ok_bits, tby, tbx, th)
                                mm |= KNOWN | bb
                                mf[tt] = mm
                            bits = mm & 255
                        sh = np.uint64(4 * k)
                        S[2 * wbr] |= np.uint64(bits & 15) << sh
                        S[2 * wbr + 1] |= np.uint64(bits >> 4) << sh
                        K[wbr] |= _NIBBLE << sh
                        need &= ~(_NIBBLE << sh)
                        klo = min(klo, wbr)
                        khi = max(khi, wbr)
                    m2 = d & S[r]
                    if m2 == n:
                        break
                    n = m2
                if n != C[r]:
                    if (n & _EDGE) != 0 or r == 1 or r == WIN_ROWS - 2:  # it may go on outside the window
                        status = _OUTSIDE
                        break
                    C[r] = n
                    pend |= np.uint64(5) << np.uint64(r - 1)  # the rows above and below
                    lo = min(lo, r)
                    hi = max(hi, r)
            npx = 0
            s = 0.0
            sx = 0.0
            sy = 0.0
            sb = 0.0
            peak = 0.0
            if status == _GROWN:  # sums in raster order; the pixels are taken
                for r in range(lo, hi + 1):
                    x = C[r]
                    pj = wr0 + r
                    while x != 0:
                        pi = wc0 + np.int64(trailing_zeros(x))
                        x &= x - _ONE
                        f = float(img[pj, pi])
                        npx += 1
                        s += f
                        sx += f * (pi + 0.5)
                        sy += f * (pj + 0.5)
                        sb += mu[bbin[pj >> 1, pi >> 2]]
                        peak = max(peak, f)
                        mf[(pj >> 1) * nbx + (pi >> 2)] |= 1 << (8 + 4 * (pj & 1) + (pi & 3))
            if window:
                for r in range(lo - 1, hi + 2):
                    C[r] = 0
            if status == _OUTSIDE:
                status, n_ent = _grow_wide(img, sentinel, bbin, ok_bits, thr_lo, mf, nby, nbx, stack, slot, by, bx,
                                           bit, row_limit)
                if status == _GROWN:  # sums in the walk's block order
                    for e in range(n_ent):
                        eby = np.int64(stack[0, e])
                        ebx = np.int64(stack[1, e])
                        em = stack[2, e]
                        mub = mu[bbin[eby, ebx]]
                        for k in range(8):
                            if (em >> k) & 1:
                                pj = 2 * eby + (k >> 2)
                                pi = 4 * ebx + (k & 3)
                                f = float(img[pj, pi])
                                npx += 1
                                s += f
                                sx += f * (pi + 0.5)
                                sy += f * (pj + 0.5)
                                sb += mub
                                peak = max(peak, f)
            if status != _GROWN:
                break
            if npx > max_spot_size:
                continue
            if n_out == cap_out:
                status = _OUT_FULL
                break
            out[n_out, 0] = npx
            out[n_out, 1] = s
            out[n_out, 2] = sx
            out[n_out, 3] = sy
            out[n_out, 4] = sb
            out[n_out, 5] = peak
            n_out += 1
        for wbr in range(klo, khi + 1):
            K[wbr] = 0
            S[2 * wbr] = 0
            S[2 * wbr + 1] = 0
        if status != _GROWN:
            break
        q += 1
    state[0] = q
    state[1] = n_out
    if status == _WAITING:
        return 1
    if status == _NO_ROOM:
        return -1
    if status == _OUT_FULL:
        return -2
    return 0
