"""The CrystFEL-compatible hit endpoint: the runner forwards hit frames only, bounded, drop-oldest.

Synthetic series as in test_runner: 40 frames of 256 × 512 (uint16), every fourth frame blank, the
others 60 seeded Gaussian spots; the Eiger numbers images from 1, so images 4, 8, … 40 are blank.
"""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from mxcat.live.frames import Frame, SeriesInfo
from mxcat.live.hits_rep import (
    END_REPLY,
    NO_HIT,
    HitBuffer,
    HitServer,
    hit_message,
    send_hit,
    worker_hit_socket,
)
from mxcat.live.runner import run
from mxcat.live.sources.msgpack_source import MsgpackSource, decode_message

from .test_runner import Detector, _endpoint

pytestmark = pytest.mark.usefixtures("warm_kernels")

N_FRAMES = 40
SHAPE = (256, 512)
HIT_IMAGES = [i + 1 for i in range(N_FRAMES) if i % 4 != 3]


@pytest.fixture(scope="module")
def frames():
    from mxcat.live.simulate import synthetic_frame

    return [synthetic_frame(shape=SHAPE, dtype="<u2", seed=(7, i), n_spots=0 if i % 4 == 3 else 60, gaps=False)[0]
            for i in range(N_FRAMES)]


def _check_hit(image: np.ndarray, scalars: dict, frames: list[np.ndarray]) -> int:
    n = scalars["image_number"]
    assert n in HIT_IMAGES
    assert image.dtype == np.dtype("<i4") and image.shape == SHAPE
    np.testing.assert_array_equal(image, frames[n - 1].astype(np.int32))
    assert scalars["series"] == "1" and scalars["n_spots"] >= 30
    assert scalars["detector_distance"] == pytest.approx(100.0)  # mm, as CrystFEL's clen wants
    assert scalars["beam_energy"] == pytest.approx(12398.42 / 0.9763, rel=1e-5)  # eV
    return n


def test_streaming_client_gets_every_hit_and_no_blank(frames):
    ep = _endpoint()
    got: list[int] = []
    replies = {"no_hit": 0, "end": 0}
    done = threading.Event()
    errors: list[BaseException] = []
    cctx = zmq.Context()

    def client():
        sock = cctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 2000)
        sock.connect(ep)
        try:
            while True:
                sock.send(b"next")
                try:
                    body = sock.recv()
                except zmq.Again:
                    if done.is_set():
                        return
                    sock.close(linger=0)  # a REQ socket that timed out is not reused
                    sock = cctx.socket(zmq.REQ)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.RCVTIMEO, 2000)
                    sock.connect(ep)
                    continue
                obj = msgpack.unpackb(body, raw=False)
                if obj.get("mxcat_no_hit"):
                    if obj.get("mxcat_end"):
                        replies["end"] += 1
                        return
                    replies["no_hit"] += 1
                    continue
                image, scalars = decode_message(body)
                got.append(_check_hit(image, scalars, frames))
        except BaseException as err:
            errors.append(err)
        finally:
            sock.close(linger=0)

    th = threading.Thread(target=client, daemon=True)
    th.start()
    det = Detector(frames, rate=200.0)
    try:
        s = run(det.endpoint, protocol="eiger1", workers=2, max_series=1, timeout=25, ready=det.start, queue_size=64,
                hits_endpoint=ep, hits_wait=0.3, hits_drain=3.0)
    finally:
        done.set()
        det.close()
        th.join(timeout=5)
        cctx.term()
    assert not th.is_alive()
    assert not errors, errors
    assert det.error is None and all(c == 0 for c in s.worker_exitcodes)
    h = s.hits
    assert h is not None and h["max_hits"] == 16 and h["high_water"] <= 16
    assert h["n_received"] + h["n_dropped_workers"] == len(HIT_IMAGES)  # blank frames never forwarded
    lost = h["n_dropped"] + h["n_dropped_workers"]
    assert len(got) == len(set(got)) == h["n_served"] == len(HIT_IMAGES) - lost - h["n_buffered"]
    # an eager client mostly keeps up; how many of the bounded buffer's drops a loaded two-core CI
    # machine causes is timing (5 of them once), so the bound is loose: the accounting above is exact
    assert lost <= len(HIT_IMAGES) // 3 and h["n_buffered"] == 0
    assert set(got) <= set(HIT_IMAGES)
    assert s.series[0].n_hits == len(HIT_IMAGES)


def test_buffer_bound_drops_oldest_and_msgpack_source_reads_hits(frames):
    ep = _endpoint()
    det = Detector(frames, rate=400.0)
    got: list[Frame] = []
    ends: list = []
    cctx = zmq.Context()
    started = threading.Event()

    def ready():
        det.start()
        started.set()

    def client():  # asks only once the whole series has been analysed: the buffer holds the last 4 hits
        started.wait(timeout=20)
        det.thread.join(timeout=20)
        time.sleep(1.0)
        src = MsgpackSource(ep, idle_timeout=5.0, context=cctx)
        for item in src:
            if isinstance(item, Frame):
                got.append(item)
            elif not isinstance(item, SeriesInfo):
                ends.append(item)

    th = threading.Thread(target=client, daemon=True)
    th.start()
    try:
        s = run(det.endpoint, protocol="eiger1", workers=1, max_series=1, timeout=25, ready=ready, queue_size=64,
                hits_endpoint=ep, hits_buffer=4, hits_wait=0.2, hits_drain=8.0)
    finally:
        th.join(timeout=10)
        det.close()
        cctx.term()
    assert not th.is_alive() and det.error is None
    h = s.hits
    assert h["high_water"] == 4 and h["n_served"] == len(got) == 4 and h["n_buffered"] == 0
    assert h["n_received"] + h["n_dropped_workers"] == len(HIT_IMAGES)
    assert h["n_dropped"] == h["n_received"] - 4  # drop-oldest, every drop counted
    numbers = [_check_hit(f.data, f.extra, frames) for f in got]
    assert numbers == sorted(numbers)
    if h["n_dropped_workers"] == 0:
        assert numbers == HIT_IMAGES[-4:]  # the newest hits survive
    assert len(ends) == 1  # the server's end reply ends the MsgpackSource series


def test_hit_buffer_and_message():
    b = HitBuffer(3)
    for i in range(7):
        b.put(bytes([i]))
    assert len(b) == 3 and b.n_dropped == 4 and b.n_put == 7 and b.high_water == 3
    assert [b.pop() for _ in range(4)] == [b"\x04", b"\x05", b"\x06", None]
    with pytest.raises(ValueError):
        HitBuffer(0)
    data = np.array([[1, 2], [3, 0xFFFFFFFF]], np.uint32)
    info = SeriesInfo("s", "eiger2", wavelength=1.0, distance=0.25)
    image, scalars = decode_message(hit_message(Frame("s", 9, data, extra={"bunch": 3}), info, n_spots=42))
    assert image.dtype == np.dtype("<i4") and image.tolist() == [[1, 2], [3, -1]]
    assert scalars == {"bunch": 3, "image_number": 9, "series": "s", "n_spots": 42, "wavelength": 1.0,
                       "beam_energy": pytest.approx(12398.42, rel=1e-6), "detector_distance": 250.0}
    raw = msgpack.unpackb(hit_message(Frame("s", 1, data), None), raw=False)
    assert raw["detector_data"]["type"] == "<i4" and raw["detector_data"]["shape"] == [2, 2]


def test_hit_server_no_hit_then_hit_then_end():
    ep = _endpoint()
    ctx = zmq.Context()
    server = HitServer(ep, max_hits=2, wait=0.2, context=ctx)
    push = req = None
    try:
        push = worker_hit_socket(ctx, server.start())
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, 3000)
        req.connect(ep)
        req.send(b"next")
        assert req.recv() == NO_HIT  # nothing within the wait
        for i in range(1, 4):
            assert send_hit(push, Frame("s", i, np.full((2, 3), i, np.uint16)), None)
            time.sleep(0.05)
        time.sleep(0.3)
        req.send(b"next")
        image, scalars = decode_message(req.recv())
        assert scalars["image_number"] == 2 and image.tolist() == [[2] * 3] * 2  # image 1 was dropped
        req.send(b"next")
        assert decode_message(req.recv())[1]["image_number"] == 3
        req.send(b"next")  # pending when the server stops: the end reply
        time.sleep(0.05)
        stats = server.close()
        assert req.recv() == END_REPLY
        assert stats["n_received"] == 3 and stats["n_dropped"] == 1 and stats["n_served"] == 2
        assert stats["n_no_hit"] == 1 and stats["n_requests"] == 4
    finally:
        server.close()
        for s in (push, req):
            if s is not None:
                s.close(linger=0)
        ctx.term()
