"""Band-wise decoding and analysis of bitshuffle-LZ4 frames against decoding first.

:func:`analyse_bslz4_radial` must give exactly what :func:`analyse_frame_radial` gives on the
decoded frame, whatever the band height, block size, dtype, mask or spot layout; spots that cross
band edges and components taller than the rows decoded so far must wait, not be cut.
"""

from __future__ import annotations

import lz4.block
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxcat.live.kernels import radial_spots as rs
from mxcat.live.kernels.bslz4 import DECOMPRESS, WRONG_SIZE, block_offsets, decode_blocks, decode_rows
from mxcat.live.sources.decode import DecodeError, encode_bslz4, prepare_bslz4

from .test_kernels_radial_spots import constants, make_frame


def same(frame, c, *, block_bytes=8192, band_rows=4, ws=None, **kw):
    enc = prepare_bslz4(encode_bslz4(frame, block_bytes), frame.dtype, frame.shape)
    ref = rs.analyse_frame_radial(frame, constants=c, **kw)
    old = rs.BAND_ROWS
    rs.BAND_ROWS = band_rows
    try:
        got_frame, *got = rs.analyse_bslz4_radial(enc, constants=c, workspace=ws, **kw)
    finally:
        rs.BAND_ROWS = old
    np.testing.assert_array_equal(got_frame, frame)
    for f in ("x", "y", "intensity", "intensity_net", "n_pixels", "peak", "snr"):
        np.testing.assert_array_equal(getattr(got[0], f), getattr(ref[0], f), err_msg=f)
    np.testing.assert_array_equal(got[2].sums, ref[2].sums)
    np.testing.assert_array_equal(got[2].n_pixels, ref[2].n_pixels)
    for f in ("n_valid_pixels", "background", "saturated_fraction", "n_spots_total", "estimated_d_min", "ice_ring_score"):
        a, b = getattr(got[1], f), getattr(ref[1], f)
        assert a == b or (a != a and b != b), f
    return got


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32])
@pytest.mark.parametrize("shape", [(37, 41), (64, 70), (23, 301)])
@pytest.mark.parametrize("band_rows", [2, 4, 6, 32])
def test_bands_give_the_answer_of_decoding_first(dtype, shape, band_rows):
    rng = np.random.default_rng(5)
    for masked in (0.02, 0.3):
        mask = (rng.random(shape) < masked).astype(np.uint8)
        c = constants(shape, geometry=True, mask=mask)
        img = make_frame(shape, dtype, 2, n_spots=10)
        for block_bytes in (64, 8192):
            got = same(img, c, block_bytes=block_bytes, band_rows=band_rows, saturation_value=40, model_step=4)
            assert got[0].n >= 1


def test_decode_rows_in_any_order_and_the_verbatim_tail():
    rng = np.random.default_rng(1)
    for shape, dt, block in (((37, 41), np.uint16, 16), ((9, 7), np.uint32, 8), ((64, 64), np.uint8, 2048)):
        img = rng.integers(0, 5000, shape).astype(dt)
        body = np.frombuffer(encode_bslz4(img, block * img.itemsize)[12:], np.uint8)
        offs, bad = block_offsets(body, img.size, img.itemsize, block)
        assert bad == -1 and len(offs) > 1
        out = np.zeros(shape, dt)
        done = np.zeros(len(offs) - 1, np.bool_)
        for r in rng.permutation(shape[0]):
            assert decode_rows(DECOMPRESS, body, offs, out, r, r + 1, block, done) == 0
        np.testing.assert_array_equal(out, img)
        assert done.all()
    # a row wholly in the verbatim tail (9x7 = 63 elements: 7 blocks of 8, 7 verbatim), asked for first
    img = rng.integers(1, 5000, (9, 7)).astype(np.uint32)
    body = np.frombuffer(encode_bslz4(img, 32)[12:], np.uint8)
    offs, bad = block_offsets(body, img.size, img.itemsize, 8)
    assert bad == -1 and len(offs) == 8
    out = np.zeros_like(img)
    done = np.zeros(len(offs) - 1, np.bool_)
    assert decode_rows(DECOMPRESS, body, offs, out, 8, 9, 8, done) == 0
    np.testing.assert_array_equal(out[8], img[8])


def test_many_blocks_in_one_call_and_a_block_of_the_wrong_size():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 2**20, (64, 70)).astype(np.uint32)  # 3 blocks of 8 kB (one scratch buffer for all)
    body = np.frombuffer(encode_bslz4(img)[12:], np.uint8)
    offs, bad = block_offsets(body, img.size, 4, 2048)
    assert bad == -1 and len(offs) == 4
    out = np.zeros(img.size, np.uint32)
    assert decode_blocks(DECOMPRESS, body, offs, out, 0, 3, 2048, np.zeros(3, np.bool_)) == 0
    np.testing.assert_array_equal(out.reshape(img.shape), img)
    # block 1 replaced by valid LZ4 data 8 bytes short of the block, its length field set to match
    short = lz4.block.compress(bytes(8192 - 8), store_size=False)
    k0, k1 = int(offs[1]), int(offs[2])
    blob = np.concatenate([body[:k0], np.frombuffer(len(short).to_bytes(4, "big") + short, np.uint8), body[k1:]])
    offs, bad = block_offsets(blob, img.size, 4, 2048)
    assert bad == -1  # the framing holds
    assert decode_blocks(DECOMPRESS, blob, offs, out, 0, 3, 2048, np.zeros(3, np.bool_)) == WRONG_SIZE


def test_a_component_taller_than_the_bands_waits_for_its_rows():
    shape = (96, 64)
    img = np.random.default_rng(2).poisson(2.0, shape).astype(np.uint32)
    img[5:90, 4] = 400  # a hot column away from the centre: one component through every band
    img[40:44, 10:13] = 900  # a spot across a band edge (rows 40..43, bands of 4 or 6)
    c = constants(shape, geometry=False)
    for band in (2, 4, 6):
        for limit in (1000, 50):  # kept, or walked to its end and dropped
            got = same(img, c, block_bytes=64, band_rows=band, max_spot_size=limit)
            assert (got[0].n_pixels == 85).sum() == (1 if limit == 1000 else 0)
            assert (got[0].n_pixels == 12).sum() == 1


def test_small_buffers_and_large_values_take_the_whole_frame_path():
    shape = (64, 150)
    img = make_frame(shape, np.uint32, 9, n_spots=12, sentinel_rows=False)
    img[50, 10:140] += 900  # wider than the bit window: grown block by block, on the stack
    c = constants(shape, geometry=True)
    ws = rs.RadialWorkspace()
    b = ws.get(shape, rs.BlockTables.of(c).n_bins, img.dtype)
    b["seeds"] = np.empty(1, np.int64)
    b["stack"] = np.empty((5, 10), np.int32)
    b["out"] = np.zeros((1, 6))
    got = same(img, c, ws=ws)  # b is ws.b: the buffers were replaced by larger ones
    assert len(b["seeds"]) > 1 and b["stack"].shape[1] > 10 and b["out"].shape[0] > 1
    assert (got[0].n_pixels >= 130).sum() == 1
    assert not ws.b["win"].any()
    big = img + 1000  # every model value above the histogram: listed, then too many for a tiny list
    ws.b["big_b"], ws.b["big_v"] = np.empty(4, np.int32), np.empty(4)
    same(big, c, ws=ws)
    assert not ws.b["win"].any() and not ws.b["hist"].any()


def test_float_frames_are_decoded_whole():
    shape = (30, 34)
    img = make_frame(shape, np.float32, 3)
    same(img, constants(shape, geometry=True))


def test_a_corrupt_block_raises_and_leaves_the_workspace_clean():
    shape = (64, 64)
    img = make_frame(shape, np.uint32, 4, n_spots=8, sentinel_rows=False)
    c = constants(shape, geometry=True)
    blob = bytearray(encode_bslz4(img, 256))
    enc = prepare_bslz4(bytes(blob), img.dtype, shape)
    k = len(enc.offsets) // 2
    start = 12 + int(enc.offsets[k]) + 4
    blob[start:start + 8] = b"\xff" * 8  # the block's LZ4 data, its length field intact
    bad = prepare_bslz4(bytes(blob), img.dtype, shape)  # the framing still holds
    ws = rs.RadialWorkspace()
    with pytest.raises(ValueError, match="decompression failed"):
        rs.analyse_bslz4_radial(bad, constants=c, workspace=ws)
    with pytest.raises(DecodeError):
        bad.decode()
    assert not ws.b["win"].any()
    got = rs.analyse_bslz4_radial(enc, constants=c, workspace=ws)  # the workspace still serves
    fresh = rs.analyse_frame_radial(img, constants=c)
    np.testing.assert_array_equal(got[1].x, fresh[0].x)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ny=st.integers(1, 40), nx=st.integers(1, 40), band=st.integers(1, 12), seed=st.integers(0, 2**16),
       block=st.sampled_from([8, 16, 64, 512]), geometry=st.booleans())
def test_fuzz_bands_equal_decoding_first(ny, nx, band, seed, block, geometry):
    rng = np.random.default_rng(seed)
    img = rng.poisson(3.0, (ny, nx)).astype(np.uint16)
    for _ in range(rng.integers(0, 5)):
        y, x = rng.integers(0, ny), rng.integers(0, nx)
        img[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] += rng.integers(20, 400).astype(np.uint16)
    if ny * nx < block // 2 + 8:  # no whole block: decoded whole by design; still the same answer
        block = 8
    same(img, constants((ny, nx), geometry=geometry), block_bytes=block * 2, band_rows=band)


def test_a_workspace_serves_frame_after_frame():
    """The component marks of one frame (strong bits known, pixels taken) never reach the next:
    the band path starts each band afresh, whatever the frame before left."""
    shape = (64, 150)
    c = constants(shape, geometry=True)
    first = make_frame(shape, np.uint32, 9, n_spots=12, sentinel_rows=False)
    first[50, 10:140] += 900  # a wide component too
    ws = rs.RadialWorkspace()
    for frame in (first, first, np.roll(first, 3, axis=1), first):
        got = same(frame, c, ws=ws, band_rows=8)
        assert got[0].n >= 5


@pytest.mark.parametrize("window", [True, False])
def test_component_search_waits_for_rows_not_yet_decoded(window):
    """The resumable component search reads no row at or below ``row_limit``: a component reaching it is
    left untaken and taken up again, whole, once the rows are there (bit window and block walk)."""
    shape = (40, 64)
    full = np.random.default_rng(3).poisson(2.0, shape).astype(np.uint32)
    full[2:31, 5] = 500
    c = constants(shape, geometry=False)
    t = rs.BlockTables.of(c)
    sent = np.uint32(0xFFFFFFFF)
    mu, sig, _ = rs.background_model(full, c.ok, sent, t, step=2, iterations=2)
    lo, hi = mu + 3 * sig, mu + 8 * sig
    ws = rs.RadialWorkspace()
    b = ws.get(shape, t.n_bins, full.dtype)
    part = full.copy()
    part[10:] = 0  # rows not decoded yet (anything may be there)
    b["rsum"][:] = 0
    n_seed = rs.block_pass(part, c.ok, sent, t.bin, np.zeros((1, 1)), False, hi, None, b["rsum"], b["rmiss"], b["bs"],
                           b["bc"], b["bm"], b["seeds"], 0, t.mask_ptr, t.mask_cols, t.mask_sparse, 0, 5)[2]

    def grow(frame, state, row_limit):
        return rs.grow_spots(frame, sent, t.bin, t.ok_bits, lo, hi, mu, b["seeds"], n_seed, 1000, b["marks"], b["win"],
                             b["stack"], b["slot"], b["out"], state, row_limit, window)

    state = np.zeros(2, np.int64)
    b["marks"][:] = 0
    assert grow(part, state, 10) == 1
    assert state[1] == 0 and not (b["marks"] & 0xFF00).any()  # nothing taken of the cut component
    assert not (b["marks"][5:] != 0).any()  # nothing known below the decoded rows
    assert not b["win"].any()
    part[10:] = full[10:]
    assert grow(part, state, 40) == 0
    resumed = b["out"][:state[1]].copy()
    assert resumed[0, 0] >= 29  # the whole streak, not its first 8 rows
    at_once = np.zeros(2, np.int64)
    b["marks"][:] = 0
    assert grow(full, at_once, 40) == 0
    np.testing.assert_array_equal(resumed, b["out"][:at_once[1]])


def test_tail_rows_are_model_rows_and_big_endian_frames():
    """A model row in the verbatim tail is decoded before the model reads it (the reused buffer
    holds another frame); a big-endian frame (Stream V2 typed-array tags) is analysed natively."""
    c = constants((9, 7), geometry=False)  # 63 elements in blocks of 8: row 8 is the verbatim tail
    img = np.random.default_rng(4).poisson(2.0, (9, 7)).astype(np.uint16)
    ws = rs.RadialWorkspace()
    out = ws.frame_buffer(img.shape, img.dtype)
    out[:] = 1000
    ref = rs.analyse_frame_radial(img, constants=c, model_step=8)
    enc = prepare_bslz4(encode_bslz4(img, 16), img.dtype, img.shape)
    frame, *got = rs.analyse_bslz4_radial(enc, constants=c, workspace=ws, out=out, model_step=8)
    assert frame is out and got[1].background == ref[1].background
    np.testing.assert_array_equal(got[2].sums, ref[2].sums)
    shape = (30, 34)
    big = make_frame(shape, np.uint16, 3).astype(">u2")
    c = constants(shape, geometry=True)
    enc = prepare_bslz4(encode_bslz4(big), big.dtype, shape)
    frame, spots, _, prof = rs.analyse_bslz4_radial(enc, constants=c)
    ref = rs.analyse_frame_radial(big.astype("<u2"), constants=c)
    np.testing.assert_array_equal(spots.x, ref[0].x)
    np.testing.assert_array_equal(prof.sums, ref[2].sums)


def test_a_wrong_output_buffer_is_refused_and_the_kept_one_survives_a_new_series():
    shape = (30, 34)
    img = make_frame(shape, np.uint16, 3)
    c = constants(shape, geometry=True)
    enc = prepare_bslz4(encode_bslz4(img), img.dtype, shape)
    for bad in (np.empty((30, 35), np.uint16), np.empty(shape, np.uint32), np.empty((34, 30), np.uint16).T):
        with pytest.raises(ValueError, match="out is"):
            rs.analyse_bslz4_radial(enc, constants=c, out=bad)
    ws = rs.RadialWorkspace()
    kept = ws.frame_buffer(shape, img.dtype)
    ws.get((8, 8), 4, np.dtype(np.uint32))  # another series re-keys the workspace's buffers
    assert ws.frame_buffer(shape, img.dtype) is kept
    assert ws.frame_buffer((8, 8), img.dtype) is not kept


def test_ice_ring_scores_of_the_band_pass_equal_decoding_first():
    """The band pass takes the ice-ring sums of the model rows while they are in cache."""
    from mxcat.live.kernels.geometry import SeriesConstants

    c = SeriesConstants.build(shape=(512, 512), beam_centre_x=256, beam_centre_y=256, pixel_size_x=172e-6,
                              pixel_size_y=172e-6, distance=0.08, wavelength=1.0)
    rng = np.random.default_rng(5)
    frame = rng.poisson(10.0, c.shape).astype(np.uint32)
    band = c.ice_band == 4
    frame[band] += rng.poisson(15.0, band.sum()).astype(np.uint32)
    got = same(frame, c, band_rows=32)
    ref = rs.analyse_frame_radial(frame, constants=c)
    assert got[1].ice_ring_score > 2.0
    np.testing.assert_array_equal(got[1].ice_ring_scores, ref[1].ice_ring_scores)
