"""Pixel codecs: round trips in every encoding, the real Stream V1 16M blob, and fuzzing (never a crash)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxcat.live.sources.decode import (
    ENCODINGS,
    DecodeError,
    decode,
    decode_bslz4,
    decode_lz4_framed,
    encode,
    encode_bslz4,
    encode_lz4_framed,
    encoding_dtype,
)

CASES = [
    (e, d)
    for e in ENCODINGS
    for d in ("uint8", "uint16", "uint32")
    if not e.startswith("bs") or int(e[2:4].rstrip("-")) == np.dtype(d).itemsize * 8
]


@pytest.mark.parametrize(("encoding", "dtype"), CASES)
@pytest.mark.parametrize("shape", [(37, 51), (3, 5), (256, 300)])
def test_round_trip_bit_exact(encoding, dtype, shape):
    x = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    got = decode(encoding, encode(encoding, x), dtype, shape)
    assert got.dtype == np.dtype(dtype) and np.array_equal(got, x) and got.flags.writeable
    out = np.empty_like(x)
    assert decode(encoding, encode(encoding, x), dtype, shape, out) is out and np.array_equal(out, x)


def test_lz4_framed_round_trip_with_raw_blocks():
    x = np.random.default_rng(2).integers(0, 2**16, (100, 77), dtype="uint16")  # incompressible: raw blocks
    x[:20] = 3
    assert np.array_equal(decode_lz4_framed(encode_lz4_framed(x, 512), x.dtype, x.shape), x)


def test_unknown_encoding_and_bit_depth_mismatch():
    with pytest.raises(DecodeError, match="unknown encoding"):
        decode("zstd", b"", "uint16", (1, 1))
    with pytest.raises(DecodeError, match="16-bit"):
        decode("bs16-lz4<", b"", "uint32", (1, 1))


def test_output_buffer_mismatch():
    x = np.ones((8, 8), "uint16")
    with pytest.raises(DecodeError, match="output buffer"):
        decode("bs16-lz4<", encode("bs16-lz4<", x), "uint16", (8, 8), np.empty((8, 9), "uint16"))


def test_truncated_and_lying_headers():
    x = np.arange(4096, dtype="uint32").reshape(64, 64)
    blob = encode_bslz4(x)
    for bad in (
        blob[:5],
        blob[:-3],
        blob + b"x",
        struct.pack(">QI", x.nbytes, 8192) + b"\xff\xff\xff\xff" + blob[16:],
        struct.pack(">QI", 10, 8192) + blob[12:],
    ):
        with pytest.raises(DecodeError):
            decode_bslz4(bad, "uint32", (64, 64))


def test_real_eiger_16m_stream1_blob(corpus):
    buf = (corpus / "stream" / "dls-tickit_eiger-16m_stream1_frame_sample.bs16-lz4").read_bytes()
    a = decode("bs16-lz4<", buf, "uint16", (4362, 4148))
    assert a.shape == (4362, 4148) and a.dtype == np.uint16
    assert int((a == 0xFFFF).sum()) == 1_253_074
    assert int((a == 1).sum()) == 244 and int(a[a != 0xFFFF].max()) == 6416
    out = np.zeros_like(a)
    assert decode("bs16-lz4<", buf, "uint16", (4362, 4148), out) is out


_SMALL = np.random.default_rng(3).poisson(2, (40, 40)).astype("uint16")
_VALID = {
    e: encode(e, _SMALL if e != "bs32-lz4<" else _SMALL.astype("uint32"))
    for e in ENCODINGS
    if e != "bs8-lz4<"
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(enc=st.sampled_from(sorted(_VALID)), data=st.data())
def test_fuzz_garbage_only_raises_decode_error(enc, data):
    valid = _VALID[enc]
    mode = data.draw(st.sampled_from(["random", "truncate", "flip", "header"]))
    if mode == "random":
        buf = data.draw(st.binary(max_size=600))
    elif mode == "truncate":
        buf = valid[: data.draw(st.integers(0, len(valid)))]
    elif mode == "flip":
        b = bytearray(valid)
        for i in data.draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=20)):
            b[i] = data.draw(st.integers(0, 255))
        buf = bytes(b)
    else:
        buf = valid[:12] + data.draw(st.binary(max_size=600))
    dt = encoding_dtype(enc, "uint32" if enc == "bs32-lz4<" else "uint16")
    try:
        got = decode(enc, buf, dt, (40, 40))
    except DecodeError:
        return
    assert got.shape == (40, 40)


@settings(max_examples=200, deadline=None)
@given(buf=st.binary(max_size=400), n=st.integers(0, 5000))
def test_fuzz_lz4_framed(buf, n):
    try:
        decode_lz4_framed(struct.pack(">QI", 2 * n, 64) + buf, "uint16", (n,))
    except DecodeError:
        pass
