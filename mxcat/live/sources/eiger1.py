"""DECTRIS Eiger Stream V1 (SIMPLON ``stream`` interface): ZeroMQ multipart JSON + blobs → frames.

Messages, one ZeroMQ multipart each (an optional trailing *appendix* part is accepted everywhere):

* ``dheader-1.0`` (``header_detail`` ``none``/``basic``/``all``) + config JSON (basic, all) + for
  ``all`` the pairs ``dflatfield-1.0``/blob, ``dpixelmask-1.0``/blob, ``dcountrate_table-1.0``/blob;
* ``dimage-1.0`` (``series``, ``frame`` from 0) + ``dimage_d-1.0`` (``shape`` [x, y], ``type``,
  ``encoding``) + pixel blob + ``dconfig-1.0`` (start/stop/real time in ns);
* ``dseries_end-1.0``.

:class:`Eiger1Decoder` turns message part lists into :class:`SeriesInfo`/:class:`Frame`/
:class:`SeriesEnd` and keeps per-series counts (received, missing, out of order, malformed); a
malformed message is counted, logged once per kind, and skipped. :class:`Eiger1Source` PULLs from an
endpoint and yields those items. The shared bookkeeping (:class:`SeriesCounts`) and the ZeroMQ
loop (:class:`PullSource`) are reused by the Stream V2 source. ``Frame.index`` is the Eiger frame
number + 1 (image numbers from 1, as the file writer and :mod:`mxcat.live.frames` count them).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from mxcat.live.frames import Frame, SeriesEnd, SeriesInfo
from mxcat.live.sources.decode import DecodeError, decode, encoding_dtype, prepare_bslz4

__all__ = ["Eiger1Decoder", "Eiger1Source", "Item", "MalformedMessage", "PullSource", "SeriesCounts"]

log = logging.getLogger(__name__)

Item = SeriesInfo | Frame | SeriesEnd


class MalformedMessage(ValueError):
    """A message that cannot be used; ``kind`` groups the reasons for counting and logging once."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"{kind}: {reason}")


@dataclass
class SeriesCounts:
    """What one decoder saw of one series. Out of order: a frame number below the highest seen."""

    series_id: str
    n_expected: int | None = None
    n_received: int = 0
    n_malformed: int = 0
    n_out_of_order: int = 0
    n_duplicate: int = 0
    seen: set[int] = field(default_factory=set, repr=False)
    highest: int = -1

    def frame(self, number: int) -> bool:
        """Record frame ``number`` (from 0); False when it is a duplicate to skip."""
        if number in self.seen:
            self.n_duplicate += 1
            return False
        if number < self.highest:
            self.n_out_of_order += 1
        self.highest = max(self.highest, number)
        self.seen.add(number)
        self.n_received += 1
        return True

    @property
    def n_missing(self) -> int:
        """Frames neither received nor announced-but-malformed (the expected count, else the holes)."""
        n = self.n_expected if self.n_expected is not None else self.highest + 1
        return max(0, n - self.n_received - self.n_malformed)

    def end(self) -> SeriesEnd:
        return SeriesEnd(
            self.series_id, self.n_received, self.n_malformed, self.n_missing, self.n_out_of_order
        )


class DecoderBase:
    """Counting, once-per-kind logging and series switching shared by the V1 and V2 decoders."""

    protocol = ""

    def __init__(self, *, decode_pixels: bool = True, defer_bslz4: bool = False) -> None:
        self.decode_pixels = decode_pixels
        self.defer_bslz4 = defer_bslz4
        """Bitshuffle-LZ4 frames are checked but left encoded (:attr:`Frame.encoded`)."""
        self.current: SeriesCounts | None = None
        self.ended: set[str] = set()
        self.malformed: dict[str, int] = {}
        """Malformed messages by kind, over the decoder's life."""
        self.n_messages = 0
        self.n_stale = 0
        self._logged: set[str] = set()
        self.quiet: set[str] = set()
        """Kinds of notes that are expected in this setting and logged at DEBUG only (the runner's workers
        see frames without headers by design: PUSH deals the header to one of them)."""

    @property
    def n_malformed(self) -> int:
        return sum(self.malformed.values())

    def _note(self, kind: str, reason: str, *, level: int = logging.WARNING) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            logging.getLogger(type(self).__module__).log(
                logging.DEBUG if kind in self.quiet else level, "%s stream: %s (logged once for this kind)", self.protocol, reason
            )

    def _malformed(self, err: MalformedMessage) -> None:
        self.malformed[err.kind] = self.malformed.get(err.kind, 0) + 1
        if self.current is not None:
            self.current.n_malformed += 1
        self._note(err.kind, f"malformed message skipped: {err}")

    def _start(self, info: SeriesInfo, out: list[Item]) -> None:
        if self.current is not None:
            if self.current.series_id != info.series_id:
                self._note(
                    "restart",
                    f"series {self.current.series_id} restarted as {info.series_id} without an end",
                    level=logging.INFO,
                )
            out.append(self._finish())
        self.current = SeriesCounts(info.series_id, n_expected=info.n_images)

    def _end_series(self, sid: str, out: list[Item]) -> None:
        """A series-end message: closes the open series of that id; an end of a series never seen is
        noted and passed on once (the collector may know it from another worker)."""
        if self.current is not None and self.current.series_id == sid:
            out.append(self._finish())
        elif sid not in self.ended:
            self._note("end-unknown", f"end of series {sid} that never started")
            out.append(SeriesEnd(sid))
            self.ended.add(sid)

    def _finish(self) -> SeriesEnd:
        if self.current is None:
            raise RuntimeError("no open series to finish")  # a bug in this module, not bad input
        end = self.current.end()
        self.ended.add(self.current.series_id)
        self.current = None
        return end

    def _series_for_frame(
        self,
        series_id: str,
        shape: tuple[int, ...],
        dtype: str,
        out: list[Item],
        channels: tuple[str, ...] = (),
    ) -> SeriesCounts | None:
        """The counts of ``series_id``; a series never announced starts implicitly; an ended one is stale."""
        if self.current is not None and self.current.series_id == series_id:
            return self.current
        if series_id in self.ended:
            self.n_stale += 1
            self._note("stale", f"frame of ended series {series_id} skipped")
            return None
        self._note("no-header", f"frames of series {series_id} arrived without its header; geometry unknown")
        info = SeriesInfo(
            series_id=series_id,
            protocol=self.protocol,
            shape=shape[:2] if len(shape) >= 2 else None,
            dtype=dtype,
            channels=channels,
            extra={"header_missing": True},
        )  # type: ignore[arg-type]
        self._start(info, out)
        out.append(info)
        return self.current

    def end_of_stream(self) -> list[Item]:
        """Close the open series (source stopped); its SeriesEnd, if any."""
        return [self._finish()] if self.current is not None else []


def _json(part: Any, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(bytes(part))
    except (ValueError, TypeError) as err:
        raise MalformedMessage("json", f"{what} is not JSON: {err}") from err
    if not isinstance(obj, dict):
        raise MalformedMessage("json", f"{what} is JSON {type(obj).__name__}, not an object")
    return obj


def _num(cfg: dict[str, Any], key: str) -> float | None:
    v = cfg.get(key)
    if isinstance(v, dict):  # the SIMPLON REST form {"value": …}
        v = v.get("value")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _shape(obj: dict[str, Any], what: str) -> tuple[int, int]:
    shp = obj.get("shape")
    if not (
        isinstance(shp, list)
        and len(shp) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shp)
    ):
        raise MalformedMessage("shape", f"{what} shape {shp!r} is not [x, y]")
    return (shp[1], shp[0])  # Eiger sends [fast, slow]


def _table(header: dict[str, Any], blob: Any, what: str) -> np.ndarray:
    shape = _shape(header, what)
    try:
        dt = np.dtype(str(header.get("type"))).newbyteorder("<")
    except TypeError as err:
        raise MalformedMessage("type", f"{what} type {header.get('type')!r}: {err}") from err
    try:
        return decode("raw", blob, dt, shape)
    except DecodeError as err:
        raise MalformedMessage("size", f"{what}: {err.reason}") from err


class Eiger1Decoder(DecoderBase):
    """Stream V1 messages (lists of parts) → SeriesInfo / Frame / SeriesEnd, with per-series counts."""

    protocol = "eiger1"

    def feed(self, parts: Sequence[Any]) -> list[Item]:
        """Decode one multipart message; never raises on bad input (it is counted in :attr:`malformed`)."""
        self.n_messages += 1
        out: list[Item] = []
        try:
            if not parts:
                raise MalformedMessage("part-count", "empty message")
            head = _json(parts[0], "first part")
            htype = str(head.get("htype", ""))
            if htype.startswith("dheader-"):
                self._header(head, parts, out)
            elif htype.startswith("dimage-"):
                self._image(head, parts, out)
            elif htype.startswith("dseries_end-"):
                self._end_series(str(head.get("series")), out)
            else:
                raise MalformedMessage("htype", f"unknown htype {htype!r}")
        except MalformedMessage as err:
            self._malformed(err)
        return out

    def _header(self, head: dict[str, Any], parts: Sequence[Any], out: list[Item]) -> None:
        detail = head.get("header_detail", "basic")
        sid = str(head.get("series"))
        need = {"none": 1, "basic": 2, "all": 8}.get(detail)
        if need is None:
            raise MalformedMessage("header", f"unknown header_detail {detail!r}")
        if len(parts) not in (need, need + 1):
            raise MalformedMessage(
                "part-count", f"header ({detail}) has {len(parts)} parts, expected {need} (+ appendix)"
            )
        cfg = _json(parts[1], "config") if need >= 2 else {}
        nimages, ntrigger = cfg.get("nimages"), cfg.get("ntrigger", 1)
        n_images = nimages * ntrigger if isinstance(nimages, int) and isinstance(ntrigger, int) else None
        nx, ny = cfg.get("x_pixels_in_detector"), cfg.get("y_pixels_in_detector")
        bit_depth = cfg.get("bit_depth_image")
        info = SeriesInfo(
            series_id=sid,
            protocol=self.protocol,
            shape=(ny, nx) if isinstance(nx, int) and isinstance(ny, int) else None,
            dtype=f"uint{bit_depth}" if bit_depth in (8, 16, 32) else None,
            n_images=n_images,
            pixel_size_x=_num(cfg, "x_pixel_size"),
            pixel_size_y=_num(cfg, "y_pixel_size"),
            beam_centre_x=_num(cfg, "beam_center_x"),
            beam_centre_y=_num(cfg, "beam_center_y"),
            distance=_num(cfg, "detector_distance"),
            wavelength=_num(cfg, "wavelength"),
            count_time=_num(cfg, "count_time"),
            frame_time=_num(cfg, "frame_time"),
            omega_start=_num(cfg, "omega_start"),
            omega_increment=_num(cfg, "omega_increment"),
            saturation_value=int(v)
            if (v := _num(cfg, "countrate_correction_count_cutoff")) is not None
            else None,
            bit_depth=bit_depth if isinstance(bit_depth, int) else None,
            detector=cfg.get("description") if isinstance(cfg.get("description"), str) else None,
            extra={"header_detail": detail, "config": cfg},
        )
        if info.distance == 0.0 or info.wavelength == 0.0:  # DCU default when nobody set it: unknown
            self._note(
                "zero-geometry",
                f"series {sid}: detector_distance/wavelength is 0, treated as unknown",
                level=logging.INFO,
            )
            info.distance = info.distance or None
            info.wavelength = info.wavelength or None
        if detail == "all":
            for i in range(2, 8, 2):
                th = _json(parts[i], f"part {i}")
                kind = str(th.get("htype", ""))
                try:
                    table = _table(th, parts[i + 1], kind)
                except MalformedMessage as err:  # a truncated table does not spoil the header
                    self._note(f"table-{kind}", f"series {sid}: {err.reason}; {kind} ignored")
                    info.extra.setdefault("table_errors", {})[kind] = err.reason
                    continue
                if kind.startswith("dpixelmask-"):
                    info.pixel_mask = table
                elif kind.startswith("dflatfield-"):
                    info.flatfield = table
                elif kind.startswith("dcountrate_table-"):
                    info.extra["countrate_table"] = table
        if len(parts) == need + 1:
            try:
                info.extra["appendix"] = json.loads(bytes(parts[need]))
            except (ValueError, TypeError):
                info.extra["appendix"] = bytes(parts[need])
        self._start(info, out)
        out.append(info)

    def _image(self, head: dict[str, Any], parts: Sequence[Any], out: list[Item]) -> None:
        if len(parts) not in (4, 5):
            raise MalformedMessage("part-count", f"image has {len(parts)} parts, expected 4 (+ appendix)")
        number = head.get("frame")
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise MalformedMessage("frame", f"frame number {number!r}")
        sid = str(head.get("series"))
        desc = _json(parts[1], "dimage_d")
        shape = _shape(desc, "dimage_d")
        encoding = str(desc.get("encoding"))
        try:
            dt = encoding_dtype(encoding, str(desc.get("type")))
        except DecodeError as err:
            raise MalformedMessage("encoding", err.reason) from err
        series = self._series_for_frame(sid, shape, str(dt), out)
        if series is None:
            return
        data = np.empty(0, dt)
        encoded = None
        if self.decode_pixels:
            try:
                if self.defer_bslz4 and encoding.startswith("bs") and encoding.endswith("-lz4<"):
                    encoded = prepare_bslz4(parts[2], dt, shape)
                    data = encoded.stand_in()
                else:
                    data = decode(encoding, parts[2], dt, shape)
            except DecodeError as err:
                raise MalformedMessage("decode", f"series {sid} frame {number}: {err.reason}") from err
        if not series.frame(number):
            self._note("duplicate", f"series {sid}: frame {number} received twice; skipped")
            return
        extra: dict[str, Any] = {"frame": number, "encoding": encoding}
        try:
            timing = _json(parts[3], "dconfig")
            extra.update({k: timing[k] for k in ("start_time", "stop_time", "real_time") if k in timing})
        except MalformedMessage as err:
            self._note("dconfig", f"series {sid}: {err.reason}; timing ignored")
        out.append(Frame(series_id=sid, index=number + 1, data=data, received=time.monotonic(), extra=extra,
                         encoded=encoded))


class PullSource:
    """Iterate the items a decoder makes of the messages PULLed from ``endpoint``.

    Connects by default (the detector binds). Iteration ends after :meth:`stop`, after ``timeout``
    seconds without a message (None: wait for ever), or after the first SeriesEnd when
    ``stop_after_end``. A context passed in is left open; one made here is terminated by :meth:`close`.
    """

    decoder_class: type[DecoderBase] | None = None
    """The protocol's decoder, made when none is given (set by the protocol's subclass)."""

    def __init__(
        self,
        endpoint: str,
        decoder: DecoderBase | None = None,
        *,
        ctx: zmq.Context | None = None,
        timeout: float | None = None,
        bind: bool = False,
        stop_after_end: bool = False,
        rcvhwm: int = 1000,
        decode_pixels: bool = True,
        defer_bslz4: bool = False,
    ) -> None:
        if decoder is None:
            if self.decoder_class is None:
                raise TypeError("PullSource needs a decoder (or use Eiger1Source / Eiger2Source)")
            decoder = self.decoder_class(decode_pixels=decode_pixels, defer_bslz4=defer_bslz4)
        self.endpoint = endpoint
        self.decoder = decoder
        self.timeout = timeout
        self.stop_after_end = stop_after_end
        self._own_ctx = ctx is None
        self._ctx = ctx if ctx is not None else zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        (self._sock.bind if bind else self._sock.connect)(endpoint)
        self._stopped = False
        self._closed = False

    def stop(self) -> None:
        """Ask the iteration to end at its next poll (safe from another thread)."""
        self._stopped = True

    def close(self) -> None:
        """Close the socket (and the context if it was made here)."""
        if self._closed:
            return
        self._closed = True
        self._sock.close(linger=0)
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> PullSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Item]:
        idle_since = time.monotonic()
        poll_ms = 100
        while not self._stopped and not self._closed:
            if not self._sock.poll(poll_ms):
                if self.timeout is not None and time.monotonic() - idle_since > self.timeout:
                    break
                continue
            idle_since = time.monotonic()
            parts = self._sock.recv_multipart(copy=False)
            for item in self.decoder.feed([p.buffer for p in parts]):
                yield item
                if self.stop_after_end and isinstance(item, SeriesEnd):
                    return
        yield from self.decoder.end_of_stream()


class Eiger1Source(PullSource):
    """Eiger Stream V1 over ZeroMQ PULL; see :class:`PullSource` for the options."""

    decoder_class = Eiger1Decoder
