"""Per-series block tables of the radial analysis (:mod:`.radial_spots`): 2x4-pixel blocks and their bins.

A block is ``BLOCK_ROWS`` x ``BLOCK_COLS`` = 2 rows x 4 columns (cut by the frame edge where the
size is not a multiple); it belongs to the profile bin of the mean d*² (or radius from the frame
centre without geometry) of its unmasked pixels, and its pixels with it. A pixel's bin is thus
that of a point at most the block's half-diagonal, 1.6 px, away; the default 250 bins in d*² are
wider than that on Eiger 4M and 16M geometries (centred beam, 200 mm, 0.98 Å: at least 3.7 and
9 px at the edge), and the ice-ring score does not use the bins (it takes the pixel-exact bands).
Four columns give one block row half the scattered profile additions of 2x2 blocks (the sweep's
dominant cost) and 16 contiguous bytes per row of a 32-bit frame.

Built once per series and kept with the :class:`~.geometry.SeriesConstants`: block bins, mean
block weights (polarisation/solid angle), the pixels of each bin, the blocks that hold a
masked pixel (redone with the mask after a mask-free sweep), and per block the bits of its
usable pixels (what the component search (:mod:`.components`) reads instead of the pixel mask).
"""

from __future__ import annotations

import numba
import numpy as np

from .geometry import SeriesConstants

BLOCK_ROWS = 2
BLOCK_COLS = 4
"""Block shape; the kernels index blocks as (j >> 1, i >> 2)."""


@numba.njit(cache=True, inline="always")
def _valid(v, okp, sentinel):
    return (okp != 0) & (v != sentinel) & (v >= 0) & ((v - v) == 0)


class BlockTables:
    """Per-series tables of the block analysis: block bins, block weights, pixels per bin, masked blocks,
    usable-pixel bits per block."""

    def __init__(self, constants: SeriesConstants) -> None:
        ny, nx = constants.shape
        nby, nbx = -(-ny // BLOCK_ROWS), -(-nx // BLOCK_COLS)
        if constants.has_geometry:  # the per-pixel d*² the profile range was taken from
            coord, bcx, bcy = constants.dstar2, 0.0, 0.0
        else:  # radius from the frame centre, computed per pixel inside the kernel
            coord, bcx, bcy = np.zeros((1, 1), np.float32), constants.beam_centre_x, constants.beam_centre_y
        use_w = constants.radial_weight is not None
        weight = constants.radial_weight if use_w else np.zeros((1, 1), np.float32)
        edges = constants.radial_edges
        nb = len(edges) - 1
        self.bin = np.empty((nby, nbx), np.int16 if nb < 32767 else np.int32)
        self.weight = np.zeros((nby, nbx)) if use_w else None
        bad_blocks = _block_geometry(coord, constants.has_geometry, bcx, bcy, constants.ok, weight, use_w,
                                     float(edges[0]), float(edges[-1]), nb, self.bin,
                                     self.weight if use_w else np.zeros((1, 1)))
        self.n_bins = nb
        # pixels per bin, masked or not (the sweep subtracts the masked and invalid ones per frame)
        g = np.full((nby, nbx), BLOCK_ROWS * BLOCK_COLS, np.int64)
        if nx % BLOCK_COLS:
            g[:, -1] = BLOCK_ROWS * (nx % BLOCK_COLS)
        if ny % BLOCK_ROWS:
            g[-1, :] //= BLOCK_ROWS
        inside = self.bin >= 0
        self.pixels = np.bincount(self.bin[inside], weights=g[inside], minlength=nb).astype(np.int64)
        # blocks holding a masked pixel, per block row: fixed up after a mask-free row sweep
        self.mask_ptr = np.concatenate([[0], np.cumsum(bad_blocks.sum(axis=1))]).astype(np.int64)
        self.mask_cols = np.nonzero(bad_blocks)[1].astype(np.int64)
        self.mask_sparse = len(self.mask_cols) <= bad_blocks.size // 4
        # per block, bit 4·r + c: pixel (2·by + r, 4·bx + c) is in the frame and unmasked (None: no mask)
        self.ok_bits = None
        if len(self.mask_cols):
            okp = np.zeros((nby * BLOCK_ROWS, nbx * BLOCK_COLS), np.uint8)
            okp[:ny, :nx] = constants.ok != 0
            self.ok_bits = np.zeros((nby, nbx), np.uint8)
            for r in range(BLOCK_ROWS):
                for c in range(BLOCK_COLS):
                    self.ok_bits |= okp[r::BLOCK_ROWS, c::BLOCK_COLS] << np.uint8(BLOCK_COLS * r + c)

    @classmethod
    def of(cls, constants: SeriesConstants) -> BlockTables:
        """The tables of *constants*, built on first use and kept with them."""
        t = getattr(constants, "_block_tables", None)
        if t is None:
            t = constants._block_tables = cls(constants)
        return t


@numba.njit(cache=True)
def _block_geometry(coord, geometric, bcx, bcy, ok, weight, use_weight, lo, hi, n_bins, bins, bweight):
    """Per block: its profile bin from the mean coordinate (d*², or radius from (bcx, bcy) when
    not ``geometric``) of its unmasked pixels (−1: none, or outside [lo, hi]), into ``bins``; the
    mean weight of those pixels into ``bweight`` (when ``use_weight``); returns whether each block
    holds a masked pixel. Two block rows of sums at a time: no frame-sized temporaries."""
    ny, nx = ok.shape
    nby, nbx = bins.shape
    bad = np.zeros((nby, nbx), np.bool_)
    bsum = np.zeros(nbx)
    bn = np.zeros(nbx)
    bw = np.zeros(nbx)
    scale = n_bins / (hi - lo)
    for by in range(nby):
        bsum[:] = 0.0
        bn[:] = 0.0
        bw[:] = 0.0
        for j in range(BLOCK_ROWS * by, min(BLOCK_ROWS * (by + 1), ny)):
            for i in range(nx):
                bx = i >> 2
                if ok[j, i] == 0:
                    bad[by, bx] = True
                    continue
                c = float(coord[j, i]) if geometric else np.hypot(i + 0.5 - bcx, j + 0.5 - bcy)
                bsum[bx] += c
                bn[bx] += 1.0
                if use_weight:
                    bw[bx] += float(weight[j, i])
        for bx in range(nbx):
            b = -1
            if bn[bx] > 0:
                c = bsum[bx] / bn[bx]
                if lo <= c <= hi:
                    b = min(int(np.floor((c - lo) * scale)), n_bins - 1)
                if use_weight:
                    bweight[by, bx] = bw[bx] / bn[bx]
            bins[by, bx] = b
    return bad
