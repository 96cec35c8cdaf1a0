"""Pixel codecs of the DECTRIS streams: bitshuffle-LZ4, LZ4 and raw, with their framings.

Stream V1 names an encoding per image (``bs32-lz4<``, ``bs16-lz4<``, ``bs8-lz4<``, ``lz4<``, ``<``);
Stream V2 wraps the bytes in compression tag 56500 (``bslz4`` or ``lz4``). Both bitshuffle-LZ4
forms use the HDF5-filter framing: an 8-byte big-endian total size, a 4-byte big-endian block size
(bytes), then LZ4 blocks each preceded by its 4-byte big-endian compressed length (and the last
``n % 8`` elements verbatim). Stream V2 ``lz4`` uses the same 12-byte header with plain LZ4 blocks
(a block whose stored length equals its size is stored raw), while Stream V1 ``lz4<`` is one bare
LZ4 block. ``bitshuffle`` and ``lz4.block`` do the work; the framing is checked here first because
bitshuffle's C decoder trusts the block lengths (garbage there crashes the process). Any failure
raises :class:`DecodeError` with a reason. The ``encode_*`` functions are the inverses, for the
simulator and the tests.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bitshuffle
import lz4.block
import numpy as np

__all__ = [
    "Bslz4Frame",
    "DecodeError",
    "ENCODINGS",
    "decode",
    "decode_bslz4",
    "decode_lz4",
    "decode_lz4_framed",
    "decode_raw",
    "encode",
    "encode_bslz4",
    "encode_lz4",
    "encode_lz4_framed",
    "encoding_dtype",
    "prepare_bslz4",
]

ENCODINGS: tuple[str, ...] = ("bs32-lz4<", "bs16-lz4<", "bs8-lz4<", "lz4<", "<", "raw")
"""Stream V1 encodings understood by :func:`decode` (``raw`` and ``<`` are the same)."""

_HEADER = struct.Struct(">QI")
_BLOCK_LEN = struct.Struct(">I")
_BSHUF_TARGET_BLOCK_BYTES = 8192
_MAX_BYTES = 1 << 34  # 16 GiB: no detector frame is bigger; a header claiming more is garbage


class DecodeError(ValueError):
    """A pixel blob cannot be decoded: wrong framing, truncated, inconsistent with its dtype/shape."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _expected(dtype: Any, shape: Sequence[int]) -> tuple[np.dtype, tuple[int, ...], int]:
    try:
        dt = np.dtype(dtype)
        shp = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise DecodeError(f"bad dtype/shape {dtype!r} {shape!r}: {err}") from err
    if dt.itemsize == 0 or dt.hasobject or any(s < 0 for s in shp):
        raise DecodeError(f"unusable dtype/shape {dt} {shp}")
    nbytes = int(np.prod(shp, dtype=np.int64)) * dt.itemsize
    if nbytes > _MAX_BYTES:
        raise DecodeError(f"shape {shp} of {dt} is {nbytes} bytes, more than any frame")
    return dt, shp, nbytes


def _into(arr: np.ndarray, out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    arr = arr.reshape(shape)
    if out is None:
        return arr
    if out.shape != shape or out.dtype != arr.dtype:
        raise DecodeError(f"output buffer is {out.dtype}{out.shape}, the frame is {arr.dtype}{shape}")
    np.copyto(out, arr)
    return out


def _header(mv: memoryview, nbytes: int) -> int:
    if len(mv) < _HEADER.size:
        raise DecodeError(f"{len(mv)} bytes: shorter than the 12-byte header")
    total, block = _HEADER.unpack_from(mv)
    if total != nbytes:
        raise DecodeError(f"header says {total} bytes, dtype and shape say {nbytes}")
    if block == 0:
        raise DecodeError("header block size is 0")
    return block


@dataclass(frozen=True)
class Bslz4Frame:
    """A bitshuffle-LZ4 frame whose framing is checked and whose pixels are not decoded yet:
    :func:`mxcat.live.kernels.radial_spots.analyse_bslz4_radial` decodes it a band of rows at a
    time inside the analysis (live workers with the Eiger source option ``defer_bslz4``);
    :meth:`decode` decodes it whole."""

    body: np.ndarray
    """The bytes after the 12-byte header (uint8)."""
    offsets: np.ndarray
    """Byte offset in ``body`` of each block, and of the end of the last one."""
    block_elems: int
    dtype: np.dtype
    shape: tuple[int, ...]

    def stand_in(self) -> np.ndarray:
        """A read-only array of the frame's shape and dtype that holds no pixels (all zero)."""
        return np.broadcast_to(np.zeros((), self.dtype), self.shape)

    def decode(self, out: np.ndarray | None = None) -> np.ndarray:
        """The pixels (into ``out`` when given, of the same dtype and shape)."""
        n = int(np.prod(self.shape, dtype=np.int64))
        if n == 0:
            return _into(np.zeros(0, self.dtype), out, self.shape)
        try:
            arr = bitshuffle.decompress_lz4(self.body, (n,), self.dtype, self.block_elems)
        except Exception as err:  # the C extension raises RuntimeError/ValueError on a corrupt LZ4 block
            raise DecodeError(f"bitshuffle-LZ4 decompression failed: {err}") from err
        return _into(arr, out, self.shape)


def prepare_bslz4(buf: Any, dtype: Any, shape: Sequence[int]) -> Bslz4Frame:
    """Check the framing of a DECTRIS bitshuffle-LZ4 blob (12-byte header, then blocks) for
    ``shape`` of ``dtype``, without decoding: every block length must lie inside the blob and the
    bytes after the last block must be the verbatim ``n % 8`` elements."""
    from mxcat.live.kernels.bslz4 import block_offsets

    dt, shp, nbytes = _expected(dtype, shape)
    mv = memoryview(buf).cast("B")
    block = _header(mv, nbytes)
    item = dt.itemsize
    if block % (8 * item):
        raise DecodeError(f"block size {block} bytes is not a multiple of 8 elements of {item} bytes")
    body = np.frombuffer(mv, np.uint8, offset=_HEADER.size)
    body.flags.writeable = False  # one compiled type whatever the buffer (bytes, or writable ZeroMQ frames)
    offsets, bad = block_offsets(body, nbytes // item, item, block // item)
    n_blocks = len(offsets) - 1
    if bad == n_blocks:
        raise DecodeError(f"{len(body) - int(offsets[-1])} bytes after the last block, expected {(nbytes // item) % 8 * item}")
    if bad >= 0:
        raise DecodeError(f"block {bad + 1} of {n_blocks}: length missing, 0, or more than the {len(body)} bytes hold")
    return Bslz4Frame(body=body, offsets=offsets, block_elems=block // item, dtype=dt, shape=shp)


def decode_bslz4(buf: Any, dtype: Any, shape: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
    """Decode a DECTRIS bitshuffle-LZ4 blob (12-byte header, then blocks) into ``shape`` of ``dtype``.

    When ``out`` (same dtype and shape) is given the pixels are written there and ``out`` returned.
    """
    return prepare_bslz4(buf, dtype, shape).decode(out)


def decode_lz4(buf: Any, dtype: Any, shape: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
    """Decode one bare LZ4 block (Stream V1 ``lz4<``)."""
    dt, shp, nbytes = _expected(dtype, shape)
    try:
        raw = lz4.block.decompress(bytes(buf), uncompressed_size=nbytes, return_bytearray=True)
    except Exception as err:  # lz4.block.LZ4BlockError, or ValueError on a bad size
        raise DecodeError(f"LZ4 decompression failed: {err}") from err
    if len(raw) != nbytes:
        raise DecodeError(f"LZ4 block holds {len(raw)} bytes, expected {nbytes}")
    return _into(np.frombuffer(raw, dt), out, shp)


def decode_lz4_framed(
    buf: Any, dtype: Any, shape: Sequence[int], out: np.ndarray | None = None
) -> np.ndarray:
    """Decode DECTRIS-framed LZ4 (Stream V2 ``lz4``; the HDF5 LZ4 filter layout)."""
    dt, shp, nbytes = _expected(dtype, shape)
    mv = memoryview(buf).cast("B")
    block = _header(mv, nbytes)
    res = bytearray(nbytes)
    pos, o, size = _HEADER.size, 0, len(mv)
    while o < nbytes:
        want = min(block, nbytes - o)
        if pos + 4 > size:
            raise DecodeError(f"truncated at output byte {o} of {nbytes}")
        (n,) = _BLOCK_LEN.unpack_from(mv, pos)
        pos += 4
        if n == 0 or n > size - pos:
            raise DecodeError(f"block at output byte {o} claims {n} bytes, {size - pos} left")
        if n == want:
            res[o : o + want] = mv[pos : pos + n]
        else:
            try:
                chunk = lz4.block.decompress(mv[pos : pos + n], uncompressed_size=want)
            except Exception as err:  # lz4.block.LZ4BlockError
                raise DecodeError(f"LZ4 block at output byte {o} is corrupt: {err}") from err
            if len(chunk) != want:
                raise DecodeError(f"LZ4 block at output byte {o} holds {len(chunk)} bytes, expected {want}")
            res[o : o + want] = chunk
        pos += n
        o += want
    if pos != size:
        raise DecodeError(f"{size - pos} bytes after the last block")
    return _into(np.frombuffer(res, dt), out, shp)


def decode_raw(buf: Any, dtype: Any, shape: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
    """Copy uncompressed pixels (``dtype`` carries the byte order) out of ``buf``."""
    dt, shp, nbytes = _expected(dtype, shape)
    mv = memoryview(buf).cast("B")
    if len(mv) != nbytes:
        raise DecodeError(f"{len(mv)} bytes of raw pixels, expected {nbytes}")
    arr = np.frombuffer(mv, dt)
    return _into(arr, out, shp) if out is not None else arr.reshape(shp).copy()


def encoding_dtype(encoding: str, dtype: Any) -> np.dtype:
    """The numpy dtype of an image announced as ``dtype`` (``uint16``…) in ``encoding``; checks both agree."""
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise DecodeError(f"unknown pixel type {dtype!r}") from err
    if encoding not in ENCODINGS:
        raise DecodeError(f"unknown encoding {encoding!r} (known: {', '.join(ENCODINGS)})")
    if encoding.startswith("bs"):
        bits = int(encoding[2:].split("-")[0])
        if dt.itemsize * 8 != bits:
            raise DecodeError(f"encoding {encoding} is {bits}-bit, pixel type {dt} is {dt.itemsize * 8}-bit")
    return dt.newbyteorder("<")


def decode(
    encoding: str, buf: Any, dtype: Any, shape: Sequence[int], out: np.ndarray | None = None
) -> np.ndarray:
    """Decode a Stream V1 image blob given its ``encoding`` string (see :data:`ENCODINGS`)."""
    dt = encoding_dtype(encoding, dtype)
    if encoding.startswith("bs"):
        return decode_bslz4(buf, dt, shape, out)
    if encoding == "lz4<":
        return decode_lz4(buf, dt, shape, out)
    return decode_raw(buf, dt, shape, out)


# -- encoders (simulator, tests) -----------------------------------------------------------------


def encode_bslz4(arr: np.ndarray, block_bytes: int = _BSHUF_TARGET_BLOCK_BYTES) -> bytes:
    """Bitshuffle-LZ4 with the DECTRIS 12-byte header (block size in bytes, as the DCU writes it)."""
    a = np.ascontiguousarray(arr)
    block_elems = max(8, block_bytes // a.itemsize // 8 * 8)
    body = bitshuffle.compress_lz4(a.reshape(-1), block_elems)
    return _HEADER.pack(a.nbytes, block_elems * a.itemsize) + body.tobytes()


def encode_lz4(arr: np.ndarray) -> bytes:
    """One bare LZ4 block (Stream V1 ``lz4<``)."""
    return lz4.block.compress(np.ascontiguousarray(arr).tobytes(), store_size=False)


def encode_lz4_framed(arr: np.ndarray, block_bytes: int = 1 << 16) -> bytes:
    """DECTRIS-framed LZ4 (Stream V2 ``lz4``)."""
    raw = np.ascontiguousarray(arr).tobytes()
    parts = [_HEADER.pack(len(raw), block_bytes)]
    for o in range(0, len(raw), block_bytes):
        chunk = raw[o : o + block_bytes]
        comp = lz4.block.compress(chunk, store_size=False)
        if len(comp) >= len(chunk):
            comp = chunk
        parts.append(_BLOCK_LEN.pack(len(comp)) + comp)
    return b"".join(parts)


def encode(encoding: str, arr: np.ndarray) -> bytes:
    """Encode ``arr`` (little-endian) as a Stream V1 blob in ``encoding``."""
    a = np.ascontiguousarray(arr, dtype=np.asarray(arr).dtype.newbyteorder("<"))
    encoding_dtype(encoding, a.dtype)
    if encoding.startswith("bs"):
        return encode_bslz4(a)
    if encoding == "lz4<":
        return encode_lz4(a)
    return a.tobytes()
