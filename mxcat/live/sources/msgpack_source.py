"""CrystFEL/OnDA-style msgpack frames over ZeroMQ (CrystFEL ``--zmq-input`` with ``--zmq-request`` or
``--zmq-subscribe``; see CrystFEL's doc/articles/online.rst).

Each message is a msgpack map (or an array whose first element is the map) holding the image as a
serialised NumPy array ``{"type": "<i4"|"<f4", "shape": [ss, fs], "data": bytes}`` and named
scalars (``beam_energy``, ``detector_distance``, …). In REQ mode the source sends ``next`` and waits
for one reply per frame; in SUB mode it receives what a PUB socket sends (a single part, or
``[topic, payload]``). Scalars go to :attr:`Frame.extra`; a message that is not such a map is
counted (``n_malformed``) and skipped. The series ends after *max_frames*, after *idle_timeout*
seconds without a message, or on the mxcat end marker ``{"mxcat_end": true}`` that
:func:`serve_msgpack` sends last (a REQ socket that timed out is closed, never reused).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgpack
import numpy as np
import zmq

from mxcat.live.frames import Frame, SeriesEnd, SeriesInfo

__all__ = ["END_MARKER", "MsgpackSource", "decode_message", "encode_frame", "serve_msgpack"]

log = logging.getLogger(__name__)

END_MARKER = {"mxcat_end": True}
_DTYPES = {"<i4", "<f4", "<u2", "<u4", "<i2", "<f8", "<u1", "<i8"}
"""CrystFEL reads ``<i4`` and ``<f4``; the other little-endian types are accepted for other producers."""


class MalformedMessage(ValueError):
    """One message is not a CrystFEL/OnDA msgpack frame (the reason says why)."""


def _key(k: Any) -> Any:
    return k.decode("utf-8", "replace") if isinstance(k, bytes) else k


def _is_array(v: Any) -> bool:
    return isinstance(v, dict) and {"type", "shape", "data"} <= {_key(k) for k in v}


def decode_message(payload: bytes, data_key: str | None = None) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(image, scalars) of one message, ``None`` for the end marker; MalformedMessage otherwise."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (
        ValueError,
        msgpack.UnpackException,
        TypeError,
    ) as err:  # ExtraData, FormatError, StackError are ValueErrors
        raise MalformedMessage(f"not msgpack: {err}") from err
    if isinstance(obj, list) and obj:
        obj = obj[0]
    if not isinstance(obj, dict):
        raise MalformedMessage(f"a msgpack {type(obj).__name__}, not a map")
    obj = {_key(k): v for k, v in obj.items()}
    if obj.get("mxcat_end") is True:
        return None
    if data_key is not None:
        arr = obj.get(data_key)
        if not _is_array(arr):
            raise MalformedMessage(f"no array map under {data_key!r}")
    else:
        arrays = [k for k, v in obj.items() if _is_array(v)]
        if not arrays:
            raise MalformedMessage("no array map with type, shape and data")
        data_key = arrays[0]
        arr = obj[data_key]
    arr = {_key(k): v for k, v in arr.items()}
    kind, shape, data = _key(arr["type"]), arr["shape"], arr["data"]
    if kind not in _DTYPES:
        raise MalformedMessage(f"array type {kind!r} not one of {sorted(_DTYPES)}")
    if not (
        isinstance(shape, (list, tuple))
        and len(shape) == 2
        and all(isinstance(s, int) and s > 0 for s in shape)
    ):
        raise MalformedMessage(f"shape {shape!r} is not [ss, fs]")
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedMessage("array data is not a binary object")
    dtype = np.dtype(kind)
    if len(data) != shape[0] * shape[1] * dtype.itemsize:
        raise MalformedMessage(f"{len(data)} data bytes for shape {shape} of {kind}")
    image = np.frombuffer(data, dtype=dtype).reshape(shape[0], shape[1])
    scalars = {k: v for k, v in obj.items() if k != data_key and isinstance(v, (int, float, str, bool))}
    return image, scalars


def encode_frame(
    image: np.ndarray, scalars: Mapping[str, Any] | None = None, *, data_key: str = "detector_data"
) -> bytes:
    """One CrystFEL/OnDA msgpack message for a 2-D ``int32`` or ``float32`` image plus scalars."""
    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError("a CrystFEL msgpack frame is a 2-D array")
    kind = "<f4" if a.dtype.kind == "f" else "<i4"
    a = np.ascontiguousarray(a, dtype=kind)
    msg = dict(scalars or {})
    msg[data_key] = {"type": kind, "shape": list(a.shape), "data": a.tobytes()}
    return msgpack.packb(msg, use_bin_type=True)


class MsgpackSource:
    """Frames from a CrystFEL/OnDA msgpack producer over ZeroMQ (*mode* ``req`` or ``sub``).

    Yields one SeriesInfo (shape and dtype of the first valid frame; *info* adds SeriesInfo field
    values such as geometry), the frames (index from 1, scalars in ``extra``) and a SeriesEnd.
    """

    protocol = "msgpack"

    def __init__(
        self,
        endpoint: str,
        *,
        mode: str = "req",
        request: bytes = b"next",
        subscribe: Iterable[bytes] = (b"",),
        data_key: str | None = None,
        idle_timeout: float = 5.0,
        max_frames: int | None = None,
        series_id: str = "msgpack",
        info: Mapping[str, Any] | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        if mode not in ("req", "sub"):
            raise ValueError(f"unknown mode {mode!r}; known: ['req', 'sub']")
        self.endpoint, self.mode, self.request = endpoint, mode, request
        self.subscribe = [s.encode() if isinstance(s, str) else s for s in subscribe]
        self.data_key, self.idle_timeout, self.max_frames = data_key, idle_timeout, max_frames
        self.series_id, self.info = series_id, dict(info or {})
        self.context = context or zmq.Context.instance()
        self.n_received = 0
        self.n_malformed = 0

    def _socket(self) -> zmq.Socket:
        sock = self.context.socket(zmq.REQ if self.mode == "req" else zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, max(1, int(self.idle_timeout * 1000)))
        if self.mode == "sub":
            for prefix in self.subscribe:
                sock.setsockopt(zmq.SUBSCRIBE, prefix)
        sock.connect(self.endpoint)
        return sock

    def _payload(self, parts: list[bytes]) -> bytes:
        if len(parts) > 1:
            return parts[-1]  # [topic, payload]
        p = parts[0]
        if self.mode == "sub":
            for prefix in self.subscribe:
                if prefix and p.startswith(prefix):
                    return p[len(prefix) :]
        return p

    def __iter__(self) -> Iterator[SeriesInfo | Frame | SeriesEnd]:
        sock = self._socket()
        sent_info = False
        try:
            while self.max_frames is None or self.n_received < self.max_frames:
                try:
                    if self.mode == "req":
                        sock.send(self.request)
                    parts = sock.recv_multipart()
                except zmq.Again:
                    log.info("%s: no message for %.1f s; series ends", self.endpoint, self.idle_timeout)
                    break
                received = time.monotonic()
                try:
                    decoded = decode_message(self._payload(parts), self.data_key)
                except (MalformedMessage, KeyError) as err:
                    self.n_malformed += 1
                    log.warning("%s: malformed message skipped: %s", self.endpoint, err)
                    continue
                if decoded is None:
                    break
                image, scalars = decoded
                if not sent_info:
                    sent_info = True
                    yield SeriesInfo(
                        series_id=self.series_id,
                        protocol=self.protocol,
                        shape=image.shape,
                        dtype=image.dtype.str,
                        **self.info,
                    )
                self.n_received += 1
                yield Frame(
                    series_id=self.series_id,
                    index=self.n_received,
                    data=image,
                    received=received,
                    extra=scalars,
                )
        finally:
            sock.close(linger=0)
        if not sent_info:
            yield SeriesInfo(series_id=self.series_id, protocol=self.protocol, **self.info)
        yield SeriesEnd(series_id=self.series_id, n_received=self.n_received, n_malformed=self.n_malformed)


def serve_msgpack(
    endpoint: str,
    frames: Iterable[np.ndarray | bytes | tuple[np.ndarray, Mapping[str, Any]]],
    mode: str = "rep",
    *,
    topic: bytes = b"",
    send_end: bool = True,
    timeout: float = 10.0,
    context: zmq.Context | None = None,
) -> int:
    """Serve frames as a CrystFEL/OnDA producer; returns the number of messages sent.

    *frames*: 2-D arrays, ``(array, scalars)`` pairs, or raw ``bytes`` sent as they are (for tests of
    malformed input). *mode* ``rep`` answers each request with the next frame (then the end marker);
    ``pub`` publishes (``[topic, payload]`` when *topic* is given) once a subscriber has subscribed,
    via an XPUB socket. Gives up after *timeout* seconds without a request or subscriber.
    """
    if mode not in ("rep", "pub"):
        raise ValueError(f"unknown mode {mode!r}; known: ['rep', 'pub']")
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.REP if mode == "rep" else zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0 if mode == "rep" else 1000)
    sock.setsockopt(zmq.RCVTIMEO, max(1, int(timeout * 1000)))
    sent = 0

    def messages() -> Iterator[bytes]:
        for f in frames:
            if isinstance(f, (bytes, bytearray)):
                yield bytes(f)
            elif isinstance(f, tuple):
                yield encode_frame(f[0], f[1])
            else:
                yield encode_frame(f)
        if send_end:
            yield msgpack.packb(END_MARKER)

    try:
        sock.bind(endpoint)
        if mode == "pub":
            sock.recv()  # a subscription message: somebody listens
        for payload in messages():
            if mode == "rep":
                sock.recv()
                sock.send(payload)
            else:
                sock.send_multipart([topic, payload]) if topic else sock.send(payload)
            sent += 1
    except zmq.Again:
        log.warning(
            "serve_msgpack %s: nobody asked for %.1f s; stopping after %d messages", endpoint, timeout, sent
        )
    finally:
        sock.close()
    return sent
