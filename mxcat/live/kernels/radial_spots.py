"""The live engine's default frame analysis: peakfinder8-style radial thresholds on 2x4-pixel blocks.

Spot finding follows the idea of Cheetah/OM's peakfinder8 (Barty et al. (2014), J. Appl. Cryst.
47, 1118-1131; OM ``Peakfinder8PeakDetection``): the background of a pixel is described by the
statistics of its radial bin, made robust by iterative sigma clipping, and a pixel is a peak
candidate when it exceeds mean + n·sigma of its bin. Our version, chosen so that one frame costs
about one extra read of the frame:

* Pixels are grouped in blocks of 2 rows x 4 columns (:mod:`.blocks`); a block belongs to the
  radial bin of its mean d*² (or radius without geometry), and so do its pixels — the profile bins, the background model and the
  thresholds are all per block bin. Blocks cut by the frame edge have fewer pixels.
* Background model per bin from the rows ``j % model_step == 0`` (by default every 32nd row,
  but at least 64 rows: ``model_step = max(1, min(32, ny // 64))``, i.e. every 16th on an Eiger 1M;
  on Eiger 4M/16M frames 32 and 16 give the same recall and false-spot counts):
  mean μ and standard deviation σ of the valid values, then ``clip_iterations`` passes keeping
  values <= μ + 3σ_e, with σ_e = max(σ, sqrt(max(μ, 0)), 0.5) (σ_e is never below the Poisson
  width of a photon-counting detector). Bins with fewer than 16 model pixels take the model of
  the nearest bin that has enough.
* A pixel is *strong* when valid and > μ + ``snr_grow``·σ_e of its bin, and a *seed* when
  > μ + ``snr_seed``·σ_e. Strong pixels are joined in 8-connected components; a spot is a
  component with ``min_spot_size`` .. ``max_spot_size`` pixels that holds at least one seed
  (hysteresis: isolated Poisson noise rarely has a strong neighbour). Defaults snr_seed 8,
  snr_grow 3, min_spot_size 3: on synthetic Eiger 4M/16M frames recall of spots with peak SNR
  >= 10 is 98-99 % with at most 1 false spot per spot-free frame (``benchmarks/bench_live.py``).
* Per spot as in :mod:`.spots`: centroid weighted by raw values (pixel centres at i + 0.5),
  ``intensity`` the raw sum, ``background`` the mean μ of its pixels' bins, ``intensity_net``
  the sum of (I − μ), ``snr`` = intensity_net / sqrt(intensity).

The frame's ``background`` is the median of the valid model-row pixels inside the profile range
(the DIALS-definition path uses a stride-4 grid instead; both estimate the typical pixel value).
Pixel statistics in the same sweep: valid and saturated counts, the radial profile (sum and count per bin,
optionally weighted per block by the mean of its pixels' polarisation/solid-angle weights). The
ice-ring score has the definition of the DIALS-definition path (:mod:`.stats`: per ring, mean of
the valid pixels in its band minus the mean of those in its neighbour bands, over max(1, their
standard deviation)) with the pixel-exact bands of the series constants, taken on the model rows
only: a contrast, not a significance, so 1/``model_step`` of the pixels estimates it well, and no
block rounds a narrow ring into its neighbours. Validity as everywhere: detector mask, sentinel
2^n − 1, negative values, NaN and infinities.

Cost: integer frames are read once on the model rows (per-bin histograms of the values below
``HIST`` plus a list of larger ones, from which every clipping iteration is computed exactly)
and once in full (block sums, counts and maxima; the detector mask is applied by redoing only the
blocks it touches); per block one add to the profile and one comparison of its maximum with the
seed threshold of its bin (pixel counts come from per-bin totals minus the masked or invalid
pixels, which are rare); only the blocks around seed blocks are looked at pixel by pixel, when
the components are joined on per-block bit masks (:mod:`.components`). A frame
still bitshuffle-LZ4 encoded (what Eiger detectors send) is decoded and analysed a band of rows at
a time (:func:`analyse_bslz4_radial`), so that each pixel is read while the decoder's output is
still in cache; decoding whole and then analysing reads the frame back from memory.
``tests/live/test_kernels_radial_spots.py`` states every definition again in plain NumPy/Python
and compares; ``tests/live/test_bslz4_bands.py`` checks the band path against decoding first. The
per-series block tables live in :mod:`.blocks`, the background model in :mod:`.radial_model`,
the component search in :mod:`.components`; this module holds the sweep and the assembly of the
results.
"""

from __future__ import annotations

import numba
import numpy as np

from .blocks import BlockTables, _valid
from .bslz4 import DECOMPRESS, decode_rows
from .components import WIN_ROWS, grow_spots
from .fused import _tables as ice_tables
from .geometry import SeriesConstants, sentinel_for, zero_of
from .radial_model import (
    HIST,
    MIN_MODEL_PIXELS,
    SIGMA_FLOOR,
    _histogram_model,
    background_model,
    model_buffers,
    model_histogram,
)

__all__ = ["BAND_ROWS", "HIST", "MIN_MODEL_PIXELS", "SIGMA_FLOOR", "BlockTables", "RadialWorkspace",
           "analyse_bslz4_radial", "analyse_frame_radial", "auto_model_step", "background_model", "block_pass",
           "bslz4_pass", "grow_spots", "ice_rows", "spot_table"]


@numba.njit(cache=True, inline="always")
def _good(v, sentinel):
    return (v != sentinel) & (v >= 0) & ((v - v) == 0)


@numba.njit(cache=True, inline="always")
def _unmasked(o, i):
    if o is None:  # pruned at compile time: the mask-free specialisation reads no mask
        return True
    return o[i] != 0


@numba.njit(cache=True)
def _block_row(r0, r1, o0, o1, two, sentinel, saturation, bs, bc, bm):
    """Valid sum, count and maximum of each whole block (4 columns of rows r0/r1; r1 ignored unless
    ``two``), in the frame's own type (``bs`` int64 for integer frames, float64 otherwise; ``bm``
    the frame type; ``saturation`` in the frame type, or None: not counted); returns the number of
    saturated valid pixels. With ``o0``/``o1`` None the detector mask is not read (see
    :func:`_block_fix`). Branch-free, so it vectorises; a last block of 1-3 columns is
    :func:`_block_end`'s (written here, code after the loop stops LLVM vectorising it: 4x slower)."""
    zero = zero_of(r0[0])
    zs = zero_of(bs[0])
    n_sat = 0
    for bx in range(r0.shape[0] >> 2):
        s = zs
        n = np.int32(0)
        m = zero
        for k in range(4):
            i = 4 * bx + k
            a = r0[i]
            c = r1[i]
            ga = _good(a, sentinel) & _unmasked(o0, i)
            gc = _good(c, sentinel) & _unmasked(o1, i) & two
            va = a if ga else zero
            vc = c if gc else zero
            s += va
            s += vc
            n += np.int32(ga) + np.int32(gc)
            m = max(m, max(va, vc))
            if saturation is not None:  # pruned at compile time when nothing is counted
                n_sat += np.int32(ga & (va >= saturation)) + np.int32(gc & (vc >= saturation))
        bs[bx] = s
        bc[bx] = n
        bm[bx] = m
    return n_sat


@numba.njit(cache=True)
def _block_scalar(r0, r1, o0, o1, two, sentinel, saturation, i0, i1, zs):
    """Valid sum (starting from ``zs``), count, maximum and saturated count of columns i0..i1−1 of
    rows r0 (and r1 when ``two``), the detector mask read unless ``o0``/``o1`` are None; plain loops."""
    s = zs
    n = 0
    m = zero_of(r0[0])
    n_sat = 0
    for i in range(i0, i1):
        for k in range(2 if two else 1):
            v = r0[i] if k == 0 else r1[i]
            if _good(v, sentinel) and (_unmasked(o0, i) if k == 0 else _unmasked(o1, i)):
                s += v
                n += 1
                m = max(m, v)
                if saturation is not None and v >= saturation:
                    n_sat += 1
    return s, n, m, n_sat


@numba.njit(cache=True)
def _block_end(r0, r1, o0, o1, two, sentinel, saturation, bs, bc, bm):
    """The last block of a row whose width is not a multiple of 4 (as :func:`_block_row`)."""
    nx = r0.shape[0]
    bx = nx >> 2
    bs[bx], bc[bx], bm[bx], n_sat = _block_scalar(r0, r1, o0, o1, two, sentinel, saturation, 4 * bx, nx, zero_of(bs[0]))
    return n_sat


@numba.njit(cache=True)
def _block_fix(r0, r1, o0, o1, two, sentinel, saturation, bs, bc, bm, bx):
    """Redo block ``bx`` with the detector mask after a mask-free :func:`_block_row`; returns the
    change of the saturated count."""
    i0 = 4 * bx
    i1 = min(i0 + 4, r0.shape[0])
    zs = zero_of(bs[0])
    bs[bx], bc[bx], bm[bx], n_sat = _block_scalar(r0, r1, o0, o1, two, sentinel, saturation, i0, i1, zs)
    return n_sat - _block_scalar(r0, r1, None, None, two, sentinel, saturation, i0, i1, zs)[3]


@numba.njit(cache=True)
def _profile_row(br, wr, use_weight, bs, bc, bm, full, thr_hi, rsum, rmiss, out):
    """Add one block row to the profile sums (4 interleaved lanes) and list its seed blocks (block
    maximum ``bm`` above the seed threshold ``thr_hi`` of the bin) in ``out``. Pixel counts are
    not summed block by block: a block short of its ``full`` pixel count (the pixels it has: 4, 2
    or 1 at odd edges) adds the shortfall to ``rmiss`` of its bin, and the counts are the bins'
    pixel totals minus those (rare: masked or invalid pixels; a row without any skips that loop).
    Returns the shortfall of the whole row (also outside the profile range) and the number of
    seed blocks. The seed test is a branch: few blocks pass it, and a branch-free store would
    make each store's address wait for the previous test (20 % slower sweep)."""
    nbx = br.shape[0]
    missing = 0
    for bx in range(nbx):
        missing += full[bx] - bc[bx]
    if missing != 0:
        for bx in range(nbx):
            d = full[bx] - bc[bx]
            b = br[bx]
            if d != 0 and b >= 0:
                rmiss[b] += d
    n = 0
    for bx in range(nbx):
        b = br[bx]
        if b >= 0:
            rsum[b, bx & 3] += float(bs[bx]) * wr[bx] if use_weight else float(bs[bx])
            if float(bm[bx]) > thr_hi[b]:
                out[n] = bx
                n += 1
    return missing, n


@numba.njit(cache=True)
def block_pass(img, ok, sentinel, bbin, bweight, use_weight, thr_hi, saturation, rsum, rmiss, bs, bc, bm, seeds, n_seed,
               mask_ptr, mask_cols, mask_sparse, by0, by1):
    """The sweep (see module docstring) of block rows ``by0``..``by1``−1, adding to the profile
    sums ``rsum`` (n_bins, 4) and ``rmiss`` (n_bins; pixels of the bin's blocks that are masked or
    invalid, see :func:`_profile_row`); ``bs``/``bc``/``bm`` are row buffers of length ≥ number of
    block columns; ``seeds`` receives, after the ``n_seed`` already there, the flat indices
    (by·nbx + bx) of blocks whose largest valid value passes the seed threshold (all of them are
    counted; when there are more than ``len(seeds)``, call again with a larger one). With
    ``mask_sparse`` the rows are swept without the detector mask and the blocks listed in
    ``mask_cols[mask_ptr[by]:mask_ptr[by + 1]]`` redone with it.
    Returns (pixels masked or invalid, saturated pixels, seed blocks in all)."""
    ny, nx = img.shape
    nbx = (nx + 3) // 4
    full_two = np.full(nbx, 8, np.int32)  # pixels per block: 8, fewer in a cut last column or row
    full_one = np.full(nbx, 4, np.int32)
    if nx % 4:
        full_two[nbx - 1] = 2 * (nx % 4)
        full_one[nbx - 1] = nx % 4
    n_missing = 0
    n_sat = 0
    cap = seeds.shape[0]
    row_seeds = np.empty(nbx, np.int64)
    for by in range(by0, by1):
        j0 = 2 * by
        two = j0 + 1 < ny
        j1 = j0 + 1 if two else j0
        if mask_sparse:
            n_sat += _block_row(img[j0], img[j1], None, None, two, sentinel, saturation, bs, bc, bm)
            if nx & 3:
                n_sat += _block_end(img[j0], img[j1], None, None, two, sentinel, saturation, bs, bc, bm)
            for q in range(mask_ptr[by], mask_ptr[by + 1]):
                n_sat += _block_fix(img[j0], img[j1], ok[j0], ok[j1], two, sentinel, saturation, bs, bc, bm,
                                    mask_cols[q])
        else:
            n_sat += _block_row(img[j0], img[j1], ok[j0], ok[j1], two, sentinel, saturation, bs, bc, bm)
            if nx & 3:
                n_sat += _block_end(img[j0], img[j1], ok[j0], ok[j1], two, sentinel, saturation, bs, bc, bm)
        br = bbin[by]
        miss, k = _profile_row(br, bweight[by if use_weight else 0], use_weight, bs, bc, bm, full_two if two else full_one,
                               thr_hi, rsum, rmiss, row_seeds)
        n_missing += miss
        for q in range(k):
            if n_seed < cap:
                seeds[n_seed] = by * nbx + row_seeds[q]
            n_seed += 1
    return n_missing, n_sat, n_seed


class RadialWorkspace:
    """Reusable per-worker buffers for :func:`analyse_frame_radial` (sized on first use; not thread-safe).
    Holds a word per 2x4-pixel block (the component marks, :mod:`.components`), an int32 per block
    for components too wide for the bit window (its pages are touched only when one is seen), a
    few block rows and per-bin arrays, and the wide-component stack and spot table, which grow to
    the largest frame seen (20 bytes per block of a wide component) and are released when the
    frame shape changes."""

    def __init__(self) -> None:
        self._key = None
        self.b: dict = {}
        self._frame: np.ndarray | None = None

    def get(self, shape: tuple[int, int], n_bins: int, dtype: np.dtype) -> dict:
        key = (shape, n_bins, np.dtype(dtype))
        if key != self._key:
            ny, nx = shape
            nbx = (nx + 3) // 4
            self.b = dict(rsum=np.zeros((n_bins, 4)), rmiss=np.zeros(n_bins, np.int64),
                          bs=np.zeros(nbx, np.int64 if np.issubdtype(dtype, np.integer) else np.float64),
                          bc=np.empty(nbx, np.int32), bm=np.empty(nbx, dtype), seeds=np.empty(1024, np.int64),
                          marks=np.zeros(((ny + 1) // 2, nbx), np.uint32), win=np.zeros((3, WIN_ROWS), np.uint64),
                          slot=np.empty(((ny + 1) // 2) * nbx, np.int32), stack=np.empty((5, 4096), np.int32),
                          out=np.zeros((256, 6)))
            self._key = key
        return self.b

    def frame_buffer(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        """A frame-sized array kept for decoding into, frame after frame (its pages are mapped once,
        not faulted in again for every frame: ~10 % of a 4M/16M decode)."""
        a = self._frame
        if a is None or a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
            a = self._frame = np.empty(shape, dtype)
        return a


def analyse_frame_radial(frame: np.ndarray, *, constants: SeriesConstants, workspace: RadialWorkspace | None = None,
                         snr_seed: float = 8.0, snr_grow: float = 3.0, min_spot_size: int = 3, max_spot_size: int = 1000,
                         model_step: int | None = None, clip_iterations: int = 2, saturation_value: float | None = None,
                         hit_min_spots: int = 30, sentinel: int | float | None = None):
    """Spots, statistics and radial profile of one frame: ``(SpotList, FrameStats, RadialProfile)``
    (definitions in the module docstring)."""
    model_step = _check(frame.shape, constants, snr_seed, snr_grow, min_spot_size, max_spot_size, model_step,
                        clip_iterations)
    frame = np.ascontiguousarray(frame)  # the component search reads it as flat rows (a copy only for strided views)
    ws = workspace if workspace is not None else RadialWorkspace()
    t = BlockTables.of(constants)
    b = ws.get(frame.shape, t.n_bins, frame.dtype)
    sent = sentinel_for(frame.dtype) if sentinel is None else frame.dtype.type(sentinel)
    mu, sig, background = background_model(frame, constants.ok, sent, t, step=model_step,
                                           iterations=int(clip_iterations), ws=b)
    sat, count_sat = _native_saturation(saturation_value, frame.dtype)
    n_missing, n_sat, n_comp = _sweep_and_grow(frame, constants, t, b, sent, sat if count_sat else None, mu,
                                               mu + snr_grow * sig, mu + snr_seed * sig, max_spot_size)
    return _results(frame, constants, t, b, sent, model_step, n_missing, n_sat if count_sat else 0, n_comp,
                    min_spot_size, background, hit_min_spots)


BAND_ROWS = 32
"""Rows decoded and analysed at a time by :func:`analyse_bslz4_radial` (~260 kB of a 32-bit 4M frame)."""


def analyse_bslz4_radial(encoded, *, constants: SeriesConstants, workspace: RadialWorkspace | None = None,
                         snr_seed: float = 8.0, snr_grow: float = 3.0, min_spot_size: int = 3, max_spot_size: int = 1000,
                         model_step: int | None = None, clip_iterations: int = 2, saturation_value: float | None = None,
                         hit_min_spots: int = 30, sentinel: int | float | None = None, out: np.ndarray | None = None):
    """As :func:`analyse_frame_radial` for a bitshuffle-LZ4 frame not yet decoded
    (:class:`mxcat.live.sources.decode.Bslz4Frame`: ``body``, ``offsets``, ``block_elems``,
    ``dtype``, ``shape``, ``decode()``), decoding it (into ``out`` when given, e.g. the workspace's
    :meth:`~RadialWorkspace.frame_buffer`) a band of ``BAND_ROWS`` rows at a time
    (:mod:`.bslz4`): first the model rows, then per band the sweep and the component search of the seeds
    whose components lie in the rows decoded so far, all while the band is in cache. Returns
    ``(frame, SpotList, FrameStats, RadialProfile)``, the same answer as decoding first; a frame
    the band path does not serve (not integer, no whole block, more large model values than the
    histogram lists hold) is decoded whole and analysed as such. A corrupt block raises ValueError."""
    dtype = np.dtype(encoded.dtype)
    shape = tuple(encoded.shape)
    model_step = _check(shape, constants, snr_seed, snr_grow, min_spot_size, max_spot_size, model_step,
                        clip_iterations)
    opts = dict(snr_seed=snr_seed, snr_grow=snr_grow, min_spot_size=min_spot_size, max_spot_size=max_spot_size,
                model_step=model_step, clip_iterations=clip_iterations, saturation_value=saturation_value,
                hit_min_spots=hit_min_spots, sentinel=sentinel)
    if not np.issubdtype(dtype, np.integer) or not dtype.isnative or len(encoded.offsets) < 2 or len(shape) != 2:
        frame = encoded.decode()
        if not frame.dtype.isnative:  # big-endian typed arrays (Stream V2 tags): the kernels read native numbers
            frame = frame.astype(frame.dtype.newbyteorder("="))
        return (frame, *analyse_frame_radial(frame, constants=constants, workspace=workspace, **opts))
    ws = workspace if workspace is not None else RadialWorkspace()
    t = BlockTables.of(constants)
    b = ws.get(shape, t.n_bins, dtype)
    hist, big_b, big_v = model_buffers(b, t.n_bins)
    if out is None:
        frame = np.empty(shape, dtype)
    elif out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out is {out.dtype}{out.shape}, the frame {dtype}{shape} (C-contiguous, writeable)")
    else:
        frame = out
    sent = sentinel_for(dtype) if sentinel is None else dtype.type(sentinel)
    sat, count_sat = _native_saturation(saturation_value, dtype)
    use_w = t.weight is not None
    state = np.zeros(2, np.int64)
    done = np.zeros(len(encoded.offsets) - 1, np.bool_)
    _, _, n_rings, irun = ice_tables(constants)
    status, n_missing, n_sat, n_seed, grown, mu, sig, background, band, nbr = bslz4_pass(
        DECOMPRESS, encoded.body, encoded.offsets, int(encoded.block_elems), frame, constants.ok, sent, t.bin,
        t.weight if use_w else np.zeros((1, 1)), use_w, sat if count_sat else None, model_step, int(clip_iterations),
        float(snr_seed), float(snr_grow), int(max_spot_size), BAND_ROWS, hist, big_b, big_v, b["rsum"],
        b["rmiss"], b["bs"], b["bc"], b["bm"], b["seeds"], t.mask_ptr, t.mask_cols, t.mask_sparse, t.ok_bits,
        b["marks"], b["win"], b["stack"], b["slot"], b["out"], state, done, irun, n_rings)
    if status == -1:
        raise ValueError(f"bitshuffle-LZ4 decompression failed (error {n_missing})")
    if status == -2:  # the histogram model could not hold the large values: the frame is decoded, redo it whole
        return (frame, *analyse_frame_radial(frame, constants=constants, workspace=ws, **opts))
    n_comp = int(state[1])  # the components are in b["out"]
    if grown != 0 or n_seed > len(b["seeds"]):  # a buffer was too small: sweep and grow again, the frame is decoded
        n_missing, n_sat, n_comp = _sweep_and_grow(frame, constants, t, b, sent, sat if count_sat else None, mu,
                                                   mu + snr_grow * sig, mu + snr_seed * sig, max_spot_size)
    return (frame, *_results(frame, constants, t, b, sent, model_step, n_missing, n_sat if count_sat else 0, n_comp,
                             min_spot_size, background, hit_min_spots, (band, nbr)))


@numba.njit(cache=True)
def bslz4_pass(fn, body, offs, block_elems, frame, ok, sentinel, bbin, bweight, use_weight, saturation, step, iterations,
               snr_seed, snr_grow, max_spot_size, band_rows, hist, big_b, big_v, rsum, rmiss, bs, bc, bm, seeds,
               mask_ptr, mask_cols, mask_sparse, ok_bits, marks, win, stack, slot, out, state, done, irun, n_rings):
    """Decode and analyse a band at a time (see :func:`analyse_bslz4_radial`). Returns (status,
    masked or invalid pixels, saturated pixels, seed blocks, component-search status of
    :func:`grow_spots`, μ, σ_e, background, and the ice-ring sums of :func:`ice_rows`, taken
    while the model rows are in cache); status 0, −1 when a block does not decode (the
    bitshuffle error code then in place of the pixel count), −2 when the model's large values
    overflow. The frame is whole on every return but the first kind."""
    ny, nx = frame.shape
    nb = bbin.shape[0]
    mu = np.zeros(1)
    sig = np.zeros(1)
    ice_b = np.zeros((1, 3))
    ice_n = np.zeros((1, 3))
    for j in range(0, ny, step):
        err = decode_rows(fn, body, offs, frame, j, j + 1, block_elems, done)
        if err < 0:
            return -1, err, 0, 0, 0, mu, sig, 0.0, ice_b, ice_n
    n_big, width = model_histogram(frame, ok, sentinel, bbin, step, hist, big_b, big_v)
    if n_big < 0:
        err = decode_rows(fn, body, offs, frame, 0, ny, block_elems, done)
        return (-1 if err < 0 else -2), err, 0, 0, 0, mu, sig, 0.0, ice_b, ice_n
    ice_b, ice_n = ice_rows(frame, ok, sentinel, step, irun, n_rings)
    mu, sig, background = _histogram_model(hist, width, big_b, big_v, n_big, iterations, SIGMA_FLOOR,
                                            float(MIN_MODEL_PIXELS))
    thr_lo = mu + snr_grow * sig
    thr_hi = mu + snr_seed * sig
    rsum[:] = 0.0
    rmiss[:] = 0
    n_missing = 0
    n_sat = 0
    n_seed = 0
    grown = 0
    state[:] = 0
    band = max(1, band_rows // 2)  # block rows per band
    for by0 in range(0, nb, band):
        by1 = min(by0 + band, nb)
        r1 = min(2 * by1, ny)
        err = decode_rows(fn, body, offs, frame, 2 * by0, r1, block_elems, done)
        if err < 0:
            return -1, err, 0, 0, 0, mu, sig, 0.0, ice_b, ice_n
        miss, sat, n_seed = block_pass(frame, ok, sentinel, bbin, bweight, use_weight, thr_hi, saturation, rsum, rmiss,
                                       bs, bc, bm, seeds, n_seed, mask_ptr, mask_cols, mask_sparse, by0, by1)
        n_missing += miss
        n_sat += sat
        if n_seed > seeds.shape[0]:
            grown = -3  # seeds lost: the caller sweeps again with a larger list
        if grown >= 0:
            marks[by0:by1] = 0  # the band's blocks: nothing known, nothing taken (no earlier call read them)
            grown = grow_spots(frame, sentinel, bbin, ok_bits, thr_lo, thr_hi, mu, seeds, n_seed, max_spot_size, marks,
                               win, stack, slot, out, state, r1)
    return 0, n_missing, n_sat, n_seed, grown, mu, sig, background, ice_b, ice_n


def _check(shape, constants, snr_seed, snr_grow, min_spot_size, max_spot_size, model_step, clip_iterations) -> int:
    """Refuse inconsistent options; the model step to use."""
    if tuple(shape) != constants.shape:
        raise ValueError(f"frame shape {tuple(shape)} does not match series shape {constants.shape}")
    if not snr_seed >= snr_grow:
        raise ValueError(f"snr_seed ({snr_seed}) must be >= snr_grow ({snr_grow})")
    if model_step is None:
        model_step = auto_model_step(shape[0])
    if model_step < 1 or clip_iterations < 0 or min_spot_size < 1 or max_spot_size < min_spot_size:
        raise ValueError(f"need model_step >= 1, clip_iterations >= 0 and 1 <= min_spot_size <= max_spot_size "
                         f"(got {model_step}, {clip_iterations}, {min_spot_size}, {max_spot_size})")
    return int(model_step)


def _sweep_and_grow(frame, constants, t, b, sent, saturation, mu, thr_lo, thr_hi, max_spot_size):
    """Sweep and component search of a whole decoded frame, growing the buffers until they hold the
    answer: (masked or invalid pixels, saturated pixels, components in ``b["out"]``)."""
    use_w = t.weight is not None
    bw = t.weight if use_w else np.zeros((1, 1))
    ny = frame.shape[0]
    while True:
        b["rsum"][:] = 0.0
        b["rmiss"][:] = 0
        n_missing, n_sat, n_seed = block_pass(frame, constants.ok, sent, t.bin, bw, use_w, thr_hi, saturation, b["rsum"],
                                              b["rmiss"], b["bs"], b["bc"], b["bm"], b["seeds"], 0, t.mask_ptr,
                                              t.mask_cols, t.mask_sparse, 0, (ny + 1) // 2)
        if n_seed <= len(b["seeds"]):
            break
        b["seeds"] = np.empty(2 * n_seed, np.int64)  # rare: more seed blocks than ever before
    while True:
        state = np.zeros(2, np.int64)
        b["marks"][:] = 0
        r = grow_spots(frame, sent, t.bin, t.ok_bits, thr_lo, thr_hi, mu, b["seeds"], n_seed, int(max_spot_size),
                       b["marks"], b["win"], b["stack"], b["slot"], b["out"], state, ny)
        if r == 0:
            return n_missing, n_sat, int(state[1])
        if r == -1:
            b["stack"] = np.empty((5, 2 * b["stack"].shape[1]), np.int32)
        else:
            b["out"] = np.zeros((2 * b["out"].shape[0], 6))


def _results(frame, constants, t, b, sent, model_step, n_missing, n_sat, n_comp, min_spot_size, background,
             hit_min_spots, ice=None):
    """Spot list, statistics and profile from the sweep and component-search results in ``b``;
    ``ice`` the result of :func:`ice_rows` when the caller has it."""
    from .radial import RadialProfile
    from .spots import SpotList
    from .stats import finish_statistics

    x, y, s, net, bg, npx, peak, snr, n_strong = spot_table(b["out"], n_comp, min_spot_size)
    spots = SpotList(x=x, y=y, intensity=s, intensity_net=net, background=bg, n_pixels=npx, peak=peak, snr=snr,
                     dstar2=constants.spot_dstar2(x=x, y=y), n_strong_pixels=n_strong)
    rsum = b["rsum"].sum(axis=1)
    rcnt = t.pixels - b["rmiss"]
    if ice is None:
        _, _, n_rings, irun = ice_tables(constants)
        ice = ice_rows(frame, constants.ok, sent, model_step, irun, n_rings)
    band, nbr = ice
    stats = finish_statistics(spots=spots, constants=constants, n_valid=frame.size - int(n_missing), n_sat=int(n_sat),
                              band=band, nbr=nbr, sample=None, background=background, hit_min_spots=hit_min_spots)
    prof = RadialProfile(axis=constants.radial_axis, edges=constants.radial_edges, sums=rsum, n_pixels=rcnt)
    return spots, stats, prof


@numba.njit(cache=True)
def spot_table(out, n_comp, min_spot_size):
    """The spot columns of the component rows ``out[:n_comp]`` (see :func:`.components.grow_spots`)
    with at least ``min_spot_size`` pixels: x, y (value-weighted centroid; NaN for a zero sum),
    intensity, net intensity, mean background, pixels (int32), peak, SNR (0 for a zero sum), and
    the pixels of those spots in all."""
    n = 0
    for k in range(n_comp):
        if out[k, 0] >= min_spot_size:
            n += 1
    x = np.empty(n)
    y = np.empty(n)
    s = np.empty(n)
    net = np.empty(n)
    bg = np.empty(n)
    npx = np.empty(n, np.int32)
    peak = np.empty(n)
    snr = np.empty(n)
    q = 0
    n_strong = 0
    for k in range(n_comp):
        p = out[k, 0]
        if p < min_spot_size:
            continue
        sk = out[k, 1]
        x[q] = out[k, 2] / sk if sk > 0 else np.nan
        y[q] = out[k, 3] / sk if sk > 0 else np.nan
        s[q] = sk
        net[q] = sk - out[k, 4]
        snr[q] = net[q] / np.sqrt(sk) if sk > 0 else 0.0
        bg[q] = out[k, 4] / max(p, 1.0)
        npx[q] = np.int32(p)
        peak[q] = out[k, 5]
        n_strong += np.int64(p)
        q += 1
    return x, y, s, net, bg, npx, peak, snr, n_strong


def auto_model_step(ny: int) -> int:
    """The default rows between model rows for a frame of ``ny`` rows (module docstring)."""
    return max(1, min(32, ny // 64))


def _native_saturation(value: float | None, dtype: np.dtype):
    """(threshold in the frame's type, counted): valid values ``>=`` the threshold are saturated,
    exactly as ``float(v) >= value``; ``counted`` is False when no value is given or none of the
    type's values can reach it (the count is then 0)."""
    dt = np.dtype(dtype)
    if value is None or value != value:
        return dt.type(0), False
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        if value > info.max:
            return dt.type(info.max), False
        return dt.type(max(np.ceil(value), info.min)), True
    t = dt.type(value)
    if float(t) < value:  # rounded down to the frame's precision: the next representable value up
        t = np.nextafter(t, dt.type(np.inf))
    return t, bool(np.isfinite(t) or value == np.inf)


@numba.njit(cache=True)
def ice_rows(img, ok, sentinel, step, irun, n_rings):
    """Per ring (row k = ring k, row 0 unused): [pixels, sum, sum of squares] of the valid pixels in
    its band and in its neighbour bands on the rows ``j % step == 0``; ``irun`` the per-row runs of
    ice code (+k band, −k neighbour) of :func:`.fused._tables`."""
    band = np.zeros((n_rings + 1, 3))
    nbr = np.zeros((n_rings + 1, 3))
    if n_rings == 0:
        return band, nbr
    iptr, ist, isp, ival = irun
    for j in range(0, img.shape[0], step):
        src = img[j]
        okr = ok[j]
        for t in range(iptr[j], iptr[j + 1]):
            k = ival[t]
            acc = band if k > 0 else nbr
            kk = abs(k)
            for i in range(ist[t], isp[t]):
                v = src[i]
                if _valid(v, okr[i], sentinel):
                    f = float(v)
                    acc[kk, 0] += 1.0
                    acc[kk, 1] += f
                    acc[kk, 2] += f * f
    return band, nbr
