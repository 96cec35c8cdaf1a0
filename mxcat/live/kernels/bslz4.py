"""Bitshuffle-LZ4 frames decoded block by block inside compiled kernels.

The framing is bitshuffle's HDF5 filter's (Masui et al. (2015), Astronomy and Computing 12,
181-190), used by DECTRIS detectors in their streams and files: an 8-byte big-endian total size
and a 4-byte big-endian block size (bytes), then per block its 4-byte big-endian compressed
length and its LZ4 data; blocks hold ``block_elems`` elements, the last one fewer (a multiple of 8),
and the last ``n % 8`` elements follow verbatim. Blocks decode independently, so a frame can be
decoded a band of rows at a time and each band analysed while it is still in cache
(:func:`.radial_spots.analyse_bslz4_radial`). A block is decoded as bitshuffle's own
``bshuf_decompress_lz4_block`` does it, with the library's own exported C functions called from
numba through their addresses: ``LZ4_decompress_safe`` into a block-sized scratch buffer, then
``bshuf_untrans_bit_elem`` into the frame. Calling these per block rather than
``bshuf_decompress_lz4`` per run of blocks skips that function's OpenMP region and its
allocation per block (~0.5 µs per call, and a band pass makes some 350 calls per 4M frame).
"""

from __future__ import annotations

import ctypes

import bitshuffle.ext
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_LIB = ctypes.CDLL(bitshuffle.ext.__file__)
DECOMPRESS = (ctypes.cast(_LIB.LZ4_decompress_safe, ctypes.c_void_p).value,
              ctypes.cast(_LIB.bshuf_untrans_bit_elem, ctypes.c_void_p).value)
"""Addresses of ``int LZ4_decompress_safe(const char *src, char *dst, int src_size, int dst_capacity)``
and ``int64_t bshuf_untrans_bit_elem(const void *in, void *out, size_t size, size_t elem_size)``;
the kernels take them as an argument (a ctypes global would keep numba from caching them, and
every worker would compile them again)."""
WRONG_SIZE = -91
"""Error code of a block that decodes to another size than the framing says (bitshuffle's code)."""

__all__ = ["DECOMPRESS", "WRONG_SIZE", "block_offsets", "decode_blocks", "decode_rows"]


def _at(context, builder, aty, arr, offset):
    """The address ``offset`` bytes into the data of array ``arr`` (type ``aty``), as i8*."""
    data = context.make_array(aty)(context, builder, arr).data
    return builder.gep(builder.bitcast(data, ir.IntType(8).as_pointer()), [offset])


@intrinsic
def _lz4(typingctx, fn, src, src_off, n_src, dst, dst_off, cap):
    """``LZ4_decompress_safe`` at address ``fn``, from ``src`` (array) at byte ``src_off``, ``n_src``
    bytes, into ``dst`` at byte ``dst_off``, at most ``cap`` bytes. The arrays are arguments, so
    numba keeps them alive across the call."""
    sig = types.int64(fn, src, src_off, n_src, dst, dst_off, cap)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        i8p = ir.IntType(8).as_pointer()
        f = builder.inttoptr(args[0], ir.FunctionType(i32, [i8p, i8p, i32, i32]).as_pointer())
        a = signature.args
        r = builder.call(f, [_at(context, builder, a[1], args[1], args[2]), _at(context, builder, a[4], args[4], args[5]),
                             builder.trunc(args[3], i32), builder.trunc(args[6], i32)])
        return builder.sext(r, ir.IntType(64))

    return sig, codegen


@intrinsic
def _untrans(typingctx, fn, src, dst, dst_off, n, elem):
    """``bshuf_untrans_bit_elem`` at address ``fn``: ``n`` elements of ``elem`` bytes from the start
    of ``src`` into ``dst`` at byte ``dst_off`` (arrays, kept alive as :func:`_lz4`'s)."""
    sig = types.int64(fn, src, dst, dst_off, n, elem)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        i8p = ir.IntType(8).as_pointer()
        f = builder.inttoptr(args[0], ir.FunctionType(i64, [i8p, i8p, i64, i64]).as_pointer())
        a = signature.args
        return builder.call(f, [_at(context, builder, a[1], args[1], ir.Constant(i64, 0)),
                                _at(context, builder, a[2], args[2], args[3]), args[4], args[5]])

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
    functions at ``fn`` (:data:`DECOMPRESS`), block by block (the last block of the frame brings
    the verbatim tail with it). The lengths in ``body`` must have passed :func:`block_offsets`.
    Returns 0, LZ4's negative error code, or :data:`WRONG_SIZE`."""
    nb = offs.shape[0] - 1
    n_elem = flat.shape[0]
    elem = flat.itemsize
    scratch = np.empty(block_elems * elem, np.uint8)
    for k in range(k0, k1):
        if done[k]:
            continue
        done[k] = True
        e0 = k * block_elems
        n = min(block_elems, n_elem - e0) // 8 * 8
        o = offs[k]
        r = _lz4(fn[0], body, o + 4, offs[k + 1] - o - 4, scratch, 0, n * elem)  # size: the length field
        if r < 0:
            return r
        if r != n * elem:
            return WRONG_SIZE
        r = _untrans(fn[1], scratch, flat, e0 * elem, n, elem)
        if r < 0:
            return r
        if k == nb - 1:  # the n % 8 elements after the last block, verbatim
            m = (n_elem - e0 - n) * elem
            flat.view(np.uint8)[(e0 + n) * elem:(e0 + n) * elem + m] = body[offs[nb]:offs[nb] + m]
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
