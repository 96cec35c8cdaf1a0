"""Bitshuffle-LZ4 frames decoded block by block inside compiled kernels.

The framing is bitshuffle's HDF5 filter's (Masui et al. (2015), Astronomy and Computing 12,
181-190), used by DECTRIS detectors in their streams and files: an 8-byte big-endian total size
and a 4-byte big-endian block size (bytes), then per block its 4-byte big-endian compressed
length and its LZ4 data; blocks hold ``block_elems`` elements, the last one fewer (a multiple of 8),
and the last ``n % 8`` elements follow verbatim. Blocks decode independently, so a frame can be
decoded a band of rows at a time and each band analysed while it is still in cache
(:func:`.radial_spots.analyse_bslz4_radial`). The decoding is bitshuffle's own C function
``bshuf_decompress_lz4``, called from numba through ctypes; here is only the block bookkeeping.
"""

from __future__ import annotations

import ctypes

import bitshuffle.ext
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

DECOMPRESS = ctypes.cast(ctypes.CDLL(bitshuffle.ext.__file__).bshuf_decompress_lz4, ctypes.c_void_p).value
"""Address of ``int64_t bshuf_decompress_lz4(const void *in, void *out, size_t size, size_t elem_size,
size_t block_size)``; the kernels take it as an argument (a ctypes global would keep numba from
caching them, and every worker would compile them again)."""

__all__ = ["DECOMPRESS", "block_offsets", "decode_blocks", "decode_rows"]


@intrinsic
def _call(typingctx, fn, src, dst, n, elem, block):
    """Call the C function at address ``fn`` with (src, dst) addresses and three sizes."""
    sig = types.int64(fn, src, dst, n, elem, block)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(i64, [i8p, i8p, i64, i64, i64])
        f = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(f, [builder.inttoptr(args[1], i8p), builder.inttoptr(args[2], i8p), args[3], args[4], args[5]])

    return sig, codegen


@numba.njit(cache=True)
def block_offsets(body, n_elem, elem, block_elems):
    """Byte offset in ``body`` (the bytes after the 12-byte header) of each block's length field,
    and after the last block; and −1 when the framing holds, else the number of the first bad block
    (a length of 0 or beyond the end), or the number of blocks when the bytes after the last block
    are not the ``n % 8`` verbatim elements."""
    n_full = n_elem // block_elems
    last = (n_elem % block_elems) // 8 * 8
    nb = n_full + (1 if last else 0)
    offs = np.empty(nb + 1, np.int64)
    size = body.shape[0]
    pos = 0
    for k in range(nb):
        offs[k] = pos
        if pos + 4 > size:
            return offs, k
        n = (np.int64(body[pos]) << 24) | (np.int64(body[pos + 1]) << 16) | (np.int64(body[pos + 2]) << 8) \
            | np.int64(body[pos + 3])
        pos += 4
        if n == 0 or n > size - pos:
            return offs, k
        pos += n
    offs[nb] = pos
    if size - pos != (n_elem % 8) * elem:
        return offs, nb
    return offs, -1


@numba.njit(cache=True)
def decode_blocks(fn, body, offs, flat, k0, k1, block_elems, done):
    """Decode blocks ``k0``..``k1``−1 not yet ``done`` into ``flat`` (the frame, 1-d) with the
    function at ``fn`` (:data:`DECOMPRESS`), one call per run of consecutive blocks (the last block
    of the frame brings the verbatim tail with it). Returns 0, or bitshuffle's negative error code."""
    nb = offs.shape[0] - 1
    n_elem = flat.shape[0]
    elem = flat.itemsize
    k = k0
    while k < k1:
        if done[k]:
            k += 1
            continue
        e = k
        while e < k1 and not done[e]:
            done[e] = True
            e += 1
        e0 = k * block_elems
        n = (e - k) * block_elems if e < nb else n_elem - e0
        src = np.int64(body.ctypes.data) + offs[k]
        dst = np.int64(flat.ctypes.data) + np.int64(e0 * elem)
        r = _call(fn, src, dst, np.int64(n), np.int64(elem), np.int64(block_elems))
        if r < 0:
            return r
        k = e
    return 0


@numba.njit(cache=True)
def decode_rows(fn, body, offs, frame, r0, r1, block_elems, done):
    """Decode the blocks holding rows ``r0``..``r1``−1 of ``frame`` (C order, at least one block)
    not yet ``done``; rows in the verbatim tail come with the last block."""
    nx = frame.shape[1]
    nb = offs.shape[0] - 1
    if r1 <= r0:
        return 0
    k0 = min((r0 * nx) // block_elems, nb - 1)  # rows wholly in the verbatim tail: the last block brings them
    k1 = min((r1 * nx - 1) // block_elems + 1, nb)
    return decode_blocks(fn, body, offs, frame.reshape(frame.size), k0, k1, block_elems, done)
