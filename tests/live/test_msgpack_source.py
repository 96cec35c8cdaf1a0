"""CrystFEL/OnDA msgpack source over real ZeroMQ sockets on 127.0.0.1 (REQ/REP and SUB/XPUB)."""

from __future__ import annotations

import socket
import threading

import msgpack
import numpy as np
import pytest
import zmq

from mxcat.live.frames import Frame, SeriesEnd, SeriesInfo
from mxcat.live.sources.msgpack_source import (
    MalformedMessage,
    MsgpackSource,
    decode_message,
    encode_frame,
    serve_msgpack,
)


def _endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _serve(endpoint, frames, mode, **kw):
    result: list[int] = []
    t = threading.Thread(
        target=lambda: result.append(serve_msgpack(endpoint, frames, mode, timeout=5.0, **kw)), daemon=True
    )
    t.start()
    return t, result


def _frames(rng):
    ints = [rng.integers(-1, 1000, size=(6, 9)).astype(np.int32) for _ in range(3)]
    floats = [rng.random((6, 9), dtype=np.float32) for _ in range(2)]
    return ints, floats


def test_req_round_trip_with_malformed() -> None:
    rng = np.random.default_rng(0)
    ints, floats = _frames(rng)
    ep = _endpoint()
    bad = [
        b"\xc1not msgpack",
        msgpack.packb([1, 2]),
        msgpack.packb({"x": {"type": "<i4", "shape": [3, 3], "data": b"short"}}),
    ]
    msgs = [
        (ints[0], {"beam_energy": 12400.0, "detector_distance": 150.0, "event": "e0"}),
        ints[1],
        bad[0],
        ints[2],
        bad[1],
        bad[2],
    ]
    t, sent = _serve(ep, msgs, "rep")
    src = MsgpackSource(ep, mode="req", idle_timeout=5.0, info={"wavelength": 1.0})
    items = list(src)
    t.join(5)
    assert (
        isinstance(items[0], SeriesInfo)
        and items[0].shape == (6, 9)
        and items[0].dtype == "<i4"
        and items[0].wavelength == 1.0
    )
    frames = [i for i in items if isinstance(i, Frame)]
    assert [f.index for f in frames] == [1, 2, 3]
    for f, a in zip(frames, ints, strict=True):
        assert f.data.dtype == np.int32 and np.array_equal(f.data, a)
    assert frames[0].extra == {"beam_energy": 12400.0, "detector_distance": 150.0, "event": "e0"}
    end = items[-1]
    assert isinstance(end, SeriesEnd) and end.n_received == 3 and end.n_malformed == 3
    assert sent == [7]  # six messages and the end marker


def test_sub_round_trip_float32() -> None:
    rng = np.random.default_rng(1)
    _, floats = _frames(rng)
    ep = _endpoint()
    t, sent = _serve(ep, floats, "pub", topic=b"ondaframedata")
    items = list(MsgpackSource(ep, mode="sub", subscribe=[b"ondaframedata"], idle_timeout=5.0))
    t.join(5)
    frames = [i for i in items if isinstance(i, Frame)]
    assert len(frames) == 2 and all(f.data.dtype == np.float32 for f in frames)
    assert all(np.array_equal(f.data, a) for f, a in zip(frames, floats, strict=True))
    assert items[-1].n_received == 2 and items[-1].n_malformed == 0 and sent == [3]


def test_req_idle_timeout_and_max_frames() -> None:
    ep = _endpoint()
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    t, _ = _serve(ep, [a, a, a], "rep", send_end=False)
    items = list(MsgpackSource(ep, idle_timeout=2.0, max_frames=2))
    assert sum(isinstance(i, Frame) for i in items) == 2
    items = list(MsgpackSource(ep, idle_timeout=0.3))  # one frame left, then silence
    t.join(5)
    assert sum(isinstance(i, Frame) for i in items) == 1 and items[-1].n_received == 1


def test_nobody_there() -> None:
    items = list(MsgpackSource(_endpoint(), idle_timeout=0.2))
    assert isinstance(items[0], SeriesInfo) and items[-1].n_received == 0


def test_decode_message_forms() -> None:
    a = np.ones((2, 3), np.float32)
    img, scalars = decode_message(msgpack.packb([msgpack.unpackb(encode_frame(a, {"n": 1})), {"ignored": 1}]))
    assert np.array_equal(img, a) and scalars == {"n": 1}
    # bytes keys (msgpack-numpy style) and an explicit data key
    raw = msgpack.packb(
        {b"img": {b"type": b"<i4", b"shape": [1, 2], b"data": np.array([1, 2], "<i4").tobytes()}}
    )
    assert decode_message(raw, "img")[0].tolist() == [[1, 2]]
    for bad in (
        msgpack.packb({"img": {"type": ">i4", "shape": [1, 1], "data": b"1234"}}),
        msgpack.packb({"img": {"type": "<i4", "shape": [4], "data": b"1234"}}),
        msgpack.packb("text"),
    ):
        with pytest.raises(MalformedMessage):
            decode_message(bad)
    with pytest.raises(ValueError, match="known"):
        MsgpackSource("tcp://127.0.0.1:1", mode="push")


def test_sockets_closed_with_own_context() -> None:
    ctx = zmq.Context()
    try:
        items = list(MsgpackSource(_endpoint(), idle_timeout=0.1, context=ctx))
        assert items[-1].n_received == 0
    finally:
        ctx.term()  # would hang if a socket were left open
