"""A CrystFEL-compatible REP endpoint serving the live runner's *hit* frames.

CrystFEL's ``indexamajig --zmq-input=tcp://host:port --zmq-request=next --data-format=msgpack``
sends ``next`` on a REQ socket and reads one msgpack map per reply. Each reply here is one hit
frame in that layout (see :func:`mxcat.live.sources.msgpack_source.encode_frame`)::

    {"detector_data": {"type": "<i4", "shape": [ss, fs], "data": <bytes>},
     "image_number": 7, "series": "1", "n_spots": 61,
     "beam_energy": 12398.4 (eV), "wavelength": 1.0 (Å), "detector_distance": 100.0 (mm)}

(the geometry scalars only when the series header gave them; scalar ``extra`` values of the frame,
e.g. from a msgpack source, are passed on too). A matching CrystFEL geometry file says
``photon_energy = beam_energy eV``, ``clen = detector_distance mm`` and ``<panel>/data = detector_data``.
Pixel data are sent as little-endian int32; unsigned values above 2**31 - 1 (e.g. the Eiger
0xFFFFFFFF marker of a masked pixel) become -1.

**Flow.** Workers (other processes) PUSH the encoded message of each hit frame to a PULL socket of
the :class:`HitServer` thread in the runner (collector) process; the thread keeps at most
``max_hits`` messages in a :class:`HitBuffer` (a full buffer drops its *oldest* hit and counts it)
and answers each request with the oldest buffered hit. Workers send without blocking over a
small high-water mark, so a stalled server never slows analysis (such drops are counted by the
worker and reported in the run summary).

**No hit.** When the buffer is empty, a request waits up to ``wait`` seconds for a hit (``None``:
until one arrives or the server stops); if none arrives, the reply is the map ``{"mxcat_no_hit":
true}``, which holds no image array. CrystFEL cannot read image data from it, reports that event
as unreadable and asks again; :class:`~mxcat.live.sources.msgpack_source.MsgpackSource` counts it as
malformed and asks again. Because CrystFEL's REQ client itself waits without a time limit, a
long ``wait`` (the default is 10 s) keeps such messages rare. When the server stops, a request
still waiting is answered with ``{"mxcat_no_hit": true, "mxcat_end": true}`` (MsgpackSource ends
its series on ``mxcat_end``).

Memory is bounded by ``max_hits`` frames in the buffer plus the ZeroMQ high-water marks (2
messages on the server's PULL socket and 4 per worker PUSH socket; ZeroMQ applies them per pipe
and approximately).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np
import zmq

from mxcat.live.frames import Frame, SeriesInfo
from mxcat.live.sources.msgpack_source import encode_frame

__all__ = ["DATA_KEY", "END_REPLY", "HitBuffer", "HitServer", "NO_HIT", "hit_message"]

log = logging.getLogger(__name__)

DATA_KEY = "detector_data"
NO_HIT = msgpack.packb({"mxcat_no_hit": True}, use_bin_type=True)
END_REPLY = msgpack.packb({"mxcat_no_hit": True, "mxcat_end": True}, use_bin_type=True)
HC_EV_ANGSTROM = 12398.419843320026
HWM = 2
"""High-water mark of the server's PULL socket, in messages."""
WORKER_HWM = 4
"""High-water mark of each worker's PUSH socket, in messages (beyond it the worker drops the hit)."""


def _as_int32(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.int32:
        return a
    if a.dtype.kind == "u" and a.dtype.itemsize >= 4:
        out = a.astype(np.int64)
        out[out > np.iinfo(np.int32).max] = -1
        return out.astype(np.int32)
    if a.dtype.kind == "f":
        return np.nan_to_num(a, nan=-1.0).astype(np.int32)
    return a.astype(np.int32)


def hit_message(frame: Frame, info: SeriesInfo | None = None, *, n_spots: int | None = None,
                data_key: str = DATA_KEY) -> bytes:
    """The CrystFEL msgpack message of one hit frame (int32 pixels plus named scalars)."""
    scalars: dict[str, Any] = {k: v for k, v in (frame.extra or {}).items()
                               if isinstance(k, str) and isinstance(v, (int, float, str, bool)) and k != data_key}
    scalars["image_number"] = int(frame.index)
    scalars["series"] = str(frame.series_id)
    if n_spots is not None:
        scalars["n_spots"] = int(n_spots)
    if info is not None:
        if info.wavelength:
            scalars["wavelength"] = float(info.wavelength)
            scalars["beam_energy"] = HC_EV_ANGSTROM / float(info.wavelength)
        if info.distance:
            scalars["detector_distance"] = float(info.distance) * 1000.0
    return encode_frame(_as_int32(frame.data), scalars, data_key=data_key)


class HitBuffer:
    """A thread-safe FIFO of at most ``maxsize`` encoded hits; a full buffer drops its oldest (counted)."""

    def __init__(self, maxsize: int = 16) -> None:
        if maxsize < 1:
            raise ValueError(f"hit buffer size must be at least 1, not {maxsize}")
        self.maxsize = maxsize
        self._items: deque[bytes] = deque()
        self._lock = threading.Lock()
        self.n_put = 0
        self.n_dropped = 0
        self.high_water = 0

    def put(self, item: bytes) -> None:
        with self._lock:
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.n_dropped += 1
            self._items.append(item)
            self.n_put += 1
            self.high_water = max(self.high_water, len(self._items))

    def pop(self) -> bytes | None:
        """The oldest hit, or None."""
        with self._lock:
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class HitServer:
    """The REP endpoint at ``endpoint`` and the PULL socket workers push hits to, in one thread.

    :meth:`start` binds both and returns the PULL endpoint (for the workers); :meth:`close` stops
    the thread (optionally serving buffered hits for up to ``drain`` seconds first) and returns
    :meth:`stats`.
    """

    def __init__(self, endpoint: str, *, max_hits: int = 16, wait: float | None = 10.0, request: bytes | None = None,
                 context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.buffer = HitBuffer(max_hits)
        self.wait = wait
        self.request = request
        self.context = context or zmq.Context.instance()
        self.n_requests = 0
        self.n_served = 0
        self.n_no_hit = 0
        self.n_bad_requests = 0
        self.pull_endpoint: str | None = None
        self._stop = threading.Event()
        self._drain_until = 0.0
        self._bound = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 5.0) -> str:
        self._thread = threading.Thread(target=self._main, name="mxcat-live-hits", daemon=True)
        self._thread.start()
        if not self._bound.wait(timeout) or self._error is not None:
            self._stop.set()
            self._thread.join(timeout=2.0)
            raise RuntimeError(f"hit server could not bind {self.endpoint}: {self._error!r}")
        assert self.pull_endpoint is not None
        return self.pull_endpoint

    def stats(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "max_hits": self.buffer.maxsize, "n_received": self.buffer.n_put,
                "n_dropped": self.buffer.n_dropped, "n_served": self.n_served, "n_no_hit": self.n_no_hit,
                "n_requests": self.n_requests, "n_buffered": len(self.buffer), "high_water": self.buffer.high_water}

    def close(self, drain: float = 0.0) -> dict[str, Any]:
        self._drain_until = time.monotonic() + max(0.0, drain)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=drain + 5.0)
        return self.stats()

    def _main(self) -> None:
        pull = rep = None
        try:
            pull = self.context.socket(zmq.PULL)
            pull.setsockopt(zmq.LINGER, 0)
            pull.setsockopt(zmq.RCVHWM, HWM)
            port = pull.bind_to_random_port("tcp://127.0.0.1")
            rep = self.context.socket(zmq.REP)
            rep.setsockopt(zmq.LINGER, 500)
            rep.bind(self.endpoint)
            self.pull_endpoint = f"tcp://127.0.0.1:{port}"
        except BaseException as err:
            self._error = err
            for s in (pull, rep):
                if s is not None:
                    s.close(linger=0)
            self._bound.set()
            return
        self._bound.set()
        both, pull_only = zmq.Poller(), zmq.Poller()
        both.register(pull, zmq.POLLIN)
        both.register(rep, zmq.POLLIN)
        pull_only.register(pull, zmq.POLLIN)
        deadline: float | None = None  # a request is waiting for its reply until then
        pending = False
        empty_since: float | None = None
        end_sent = False
        try:
            while True:
                if self._stop.is_set():
                    now = time.monotonic()
                    if now >= self._drain_until:
                        break
                    if len(self.buffer):
                        empty_since = None
                    else:  # drained: a client asking now learns that the run is over
                        empty_since = empty_since or now
                        if pending:
                            rep.send(END_REPLY)
                            pending, end_sent = False, True
                        if end_sent or now - empty_since > 0.5:
                            break
                events = dict((pending and pull_only or both).poll(20))
                if pull in events:
                    while True:
                        try:
                            self.buffer.put(pull.recv(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                if not pending and rep in events:
                    req = rep.recv()
                    self.n_requests += 1
                    if self.request is not None and req != self.request:
                        self.n_bad_requests += 1  # answered like any other request: REP must reply
                    pending = True
                    deadline = None if self.wait is None else time.monotonic() + self.wait
                if pending:
                    item = self.buffer.pop()
                    if item is not None:
                        rep.send(item)
                        self.n_served += 1
                        pending = False
                    elif deadline is not None and time.monotonic() >= deadline:
                        rep.send(NO_HIT)
                        self.n_no_hit += 1
                        pending = False
            if pending:
                rep.send(END_REPLY)
        except Exception:
            log.exception("hit server %s failed", self.endpoint)
        finally:
            pull.close(linger=0)
            rep.close()


def worker_hit_socket(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """A worker's PUSH socket to the hit server (small high-water mark; send with NOBLOCK)."""
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, WORKER_HWM)
    s.setsockopt(zmq.LINGER, 1000)
    s.connect(endpoint)
    return s


def send_hit(sock: zmq.Socket, frame: Frame, info: SeriesInfo | None, *, n_spots: int | None = None,
             extra: Mapping[str, Any] | None = None) -> bool:
    """Push one hit without blocking; False when the socket is full (the caller counts the drop)."""
    if extra:
        frame = Frame(frame.series_id, frame.index, frame.data, frame.channel, frame.received,
                      {**frame.extra, **extra})
    try:
        sock.send(hit_message(frame, info, n_spots=n_spots), zmq.NOBLOCK)
        return True
    except zmq.Again:
        return False
