"""DECTRIS Stream V2: one CBOR map per ZeroMQ message (``start`` / ``image`` / ``end``) → frames.

CBOR tags (decoded by :func:`tag_hook` into small holder objects, resolved to arrays only when
needed): 55799 self-describe (handled by cbor2), 40 multi-dimensional array ``[shape, array]``
(row-major), 64–87 typed arrays (RFC 8746: uint8 … float64, either byte order), and DECTRIS 56500
compression ``[algorithm, elem_size, bytes]`` with ``bslz4`` or ``lz4`` (see
:mod:`mxcat.live.sources.decode`). An image carries ``data: {channel: array}`` for several
threshold channels; each channel becomes one :class:`Frame` with ``channel`` set. The start
message gives geometry: distance is the z of ``detector_translation``, the wavelength
``incident_wavelength`` (else from ``incident_energy``). Counting and robustness follow
:class:`mxcat.live.sources.eiger1.DecoderBase`; ``Frame.index`` is ``image_id`` + 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np

from mxcat.live.frames import Frame, SeriesInfo
from mxcat.live.sources.decode import (
    Bslz4Frame,
    DecodeError,
    decode_bslz4,
    decode_lz4_framed,
    decode_raw,
    prepare_bslz4,
)
from mxcat.live.sources.eiger1 import DecoderBase, Item, MalformedMessage, PullSource

__all__ = ["Compressed", "Eiger2Decoder", "Eiger2Source", "MultiDim", "TypedArray", "tag_hook", "to_array"]

log = logging.getLogger(__name__)

HC_KEV_ANGSTROM = 12.398419843320026


@dataclass(frozen=True)
class Compressed:
    """Tag 56500: ``algorithm`` (``bslz4``/``lz4``), element size, compressed bytes."""

    algorithm: str
    elem_size: int
    data: bytes


@dataclass(frozen=True)
class TypedArray:
    """Tags 64–87: a flat array of ``dtype`` whose bytes may be :class:`Compressed`."""

    dtype: np.dtype
    data: bytes | Compressed


@dataclass(frozen=True)
class MultiDim:
    """Tag 40: a row-major array of ``shape``."""

    shape: tuple[int, ...]
    array: Any


def typed_array_dtype(tag: int) -> np.dtype | None:
    """The numpy dtype of RFC 8746 typed-array tag ``tag`` (None for 68 clamped-uint8 is uint8 too)."""
    if not 64 <= tag <= 87 or tag == 76:
        return None
    bits = tag - 64
    is_float, signed, little, ll = bits >> 4 & 1, bits >> 3 & 1, bits >> 2 & 1, bits & 3
    order = "<" if little else ">"
    if is_float:
        if signed:  # 88+ would be here; out of range above
            return None
        return np.dtype(f"{order}f{2 << ll}") if ll < 3 else None
    if tag == 68:
        return np.dtype("u1")
    return np.dtype(f"{order}{'i' if signed else 'u'}{1 << ll}")


def tag_hook(*args: Any) -> Any:
    """cbor2 tag hook: tags 40, 64–87 and 56500 → :class:`MultiDim`/:class:`TypedArray`/:class:`Compressed`.

    cbor2 < 6 calls ``hook(decoder, tag)``, cbor2 6 ``hook(tag, immutable)``; both are accepted.
    Anything malformed is left as the raw :class:`cbor2.CBORTag` for :func:`to_array` to reject.
    """
    tag = next((a for a in args if isinstance(a, cbor2.CBORTag)), None)
    if tag is None:
        return args[0]
    v = tag.value
    if tag.tag == 56500:
        if (
            isinstance(v, (list, tuple))
            and len(v) == 3
            and isinstance(v[0], str)
            and isinstance(v[1], int)
            and isinstance(v[2], (bytes, bytearray))
        ):
            return Compressed(v[0], v[1], bytes(v[2]))
    elif tag.tag == 40:
        if (
            isinstance(v, (list, tuple))
            and len(v) == 2
            and isinstance(v[0], (list, tuple))
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v[0])
        ):
            return MultiDim(tuple(v[0]), v[1])
    elif (dt := typed_array_dtype(tag.tag)) is not None and isinstance(v, (bytes, bytearray, Compressed)):
        return TypedArray(dt, bytes(v) if isinstance(v, bytearray) else v)
    return tag


def deferred_bslz4(obj: Any) -> Bslz4Frame | None:
    """The checked, undecoded frame of a 2-D bitshuffle-LZ4 typed array (tag 40 around a compressed
    typed array), or None for any other value (:func:`to_array` then decodes it); DecodeError on a
    bad framing."""
    if not (isinstance(obj, MultiDim) and isinstance(obj.array, TypedArray) and isinstance(obj.array.data, Compressed)
            and obj.array.data.algorithm == "bslz4" and len(obj.shape) == 2):
        return None
    if obj.array.data.elem_size != obj.array.dtype.itemsize:
        raise DecodeError(f"bslz4 element size {obj.array.data.elem_size} for {obj.array.dtype}")
    return prepare_bslz4(obj.array.data.data, obj.array.dtype, obj.shape)


def to_array(obj: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Resolve a decoded CBOR value (:class:`MultiDim`, :class:`TypedArray`) to an ndarray; else DecodeError."""
    if isinstance(obj, MultiDim):
        if shape is not None and tuple(shape) != obj.shape:
            raise DecodeError(f"nested shapes {shape} and {obj.shape}")
        return to_array(obj.array, obj.shape)
    if not isinstance(obj, TypedArray):
        raise DecodeError(f"not a typed array: {type(obj).__name__}")
    dt = obj.dtype
    data = obj.data
    if shape is None:
        if isinstance(data, Compressed):
            raise DecodeError("a compressed typed array needs a shape (tag 40)")
        if len(data) % dt.itemsize:
            raise DecodeError(f"{len(data)} bytes is not a whole number of {dt}")
        shape = (len(data) // dt.itemsize,)
    if isinstance(data, Compressed):
        if data.algorithm == "bslz4":
            if data.elem_size != dt.itemsize:
                raise DecodeError(f"bslz4 element size {data.elem_size} for {dt}")
            return decode_bslz4(data.data, dt, shape)
        if data.algorithm == "lz4":
            return decode_lz4_framed(data.data, dt, shape)
        raise DecodeError(f"unknown compression {data.algorithm!r} (known: bslz4, lz4)")
    return decode_raw(data, dt, shape)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class Eiger2Decoder(DecoderBase):
    """Stream V2 CBOR messages → SeriesInfo / Frame (one per channel) / SeriesEnd, with counts."""

    protocol = "eiger2"

    def feed(self, parts: Sequence[Any]) -> list[Item]:
        """Decode one ZeroMQ message (a list with one part); never raises on bad input."""
        self.n_messages += 1
        out: list[Item] = []
        try:
            if len(parts) != 1:
                raise MalformedMessage("part-count", f"{len(parts)} parts, Stream V2 sends one")
            try:
                msg = cbor2.loads(bytes(parts[0]), tag_hook=tag_hook)
            except (
                Exception
            ) as err:  # cbor2 raises CBORDecodeError, but also e.g. OverflowError/RecursionError on garbage
                raise MalformedMessage("cbor", f"not CBOR: {type(err).__name__}: {err}") from err
            if not isinstance(msg, Mapping):
                raise MalformedMessage("cbor", f"message is a {type(msg).__name__}, not a map")
            kind = msg.get("type")
            if kind == "start":
                self._start_msg(msg, out)
            elif kind == "image":
                self._image(msg, out)
            elif kind == "end":
                self._end_series(self._sid(msg), out)
            else:
                raise MalformedMessage("type", f"unknown message type {kind!r}")
        except MalformedMessage as err:
            self._malformed(err)
        return out

    @staticmethod
    def _sid(msg: Mapping[str, Any]) -> str:
        uid = msg.get("series_unique_id")
        return str(uid) if isinstance(uid, str) and uid else str(msg.get("series_id"))

    def _tables(
        self, msg: Mapping[str, Any], key: str, sid: str, shape: tuple[int, int] | None
    ) -> dict[str, np.ndarray]:
        tables: dict[str, np.ndarray] = {}
        per_channel = msg.get(key)
        if not isinstance(per_channel, Mapping):
            return tables
        for channel, value in per_channel.items():
            try:
                arr = to_array(value)
                if shape is not None and arr.shape != shape:
                    arr = arr.reshape(shape) if arr.size == shape[0] * shape[1] else None  # type: ignore[assignment]
                if arr is None or arr.ndim != 2:
                    raise DecodeError(f"{key} of channel {channel} does not have the image shape {shape}")
                tables[str(channel)] = arr
            except (DecodeError, ValueError) as err:
                self._note(f"table-{key}", f"series {sid}: {key} ignored: {err}")
        return tables

    def _start_msg(self, msg: Mapping[str, Any], out: list[Item]) -> None:
        sid = self._sid(msg)
        nx, ny = msg.get("image_size_x"), msg.get("image_size_y")
        shape = (ny, nx) if isinstance(nx, int) and isinstance(ny, int) else None
        trans = msg.get("detector_translation")
        z = _num(trans[2]) if isinstance(trans, (list, tuple)) and len(trans) == 3 else None
        distance = z if z is not None and z > 0 else None
        if z is not None and z <= 0:
            self._note(
                "distance",
                f"series {sid}: detector_translation z = {z} m is not a distance; unknown",
                level=logging.INFO,
            )
        wavelength = _num(msg.get("incident_wavelength"))
        energy = _num(msg.get("incident_energy"))
        if wavelength is None and energy:
            wavelength = HC_KEV_ANGSTROM / (energy / 1000.0)
        gonio = msg.get("goniometer") if isinstance(msg.get("goniometer"), Mapping) else {}
        omega = gonio.get("omega") if isinstance(gonio.get("omega"), Mapping) else {}
        channels = (
            tuple(str(c) for c in msg.get("channels", ()) if isinstance(c, str))
            if isinstance(msg.get("channels"), (list, tuple))
            else ()
        )
        masks = self._tables(msg, "pixel_mask", sid, shape)
        flats = self._tables(msg, "flatfield", sid, shape)
        first = channels[0] if channels else next(iter(masks), None)
        sat = _num(msg.get("saturation_value"))
        n = msg.get("number_of_images")
        ntrig = msg.get("number_of_triggers", 1)
        info = SeriesInfo(
            series_id=sid,
            protocol=self.protocol,
            shape=shape,  # type: ignore[arg-type]
            dtype=None,
            n_images=n * ntrig if isinstance(n, int) and isinstance(ntrig, int) else None,
            pixel_size_x=_num(msg.get("pixel_size_x")),
            pixel_size_y=_num(msg.get("pixel_size_y")),
            beam_centre_x=_num(msg.get("beam_center_x")),
            beam_centre_y=_num(msg.get("beam_center_y")),
            distance=distance,
            wavelength=wavelength,
            count_time=_num(msg.get("count_time")),
            frame_time=_num(msg.get("frame_time")),
            omega_start=_num(omega.get("start")),
            omega_increment=_num(omega.get("increment")),
            saturation_value=int(sat) if sat is not None else None,
            bit_depth=msg.get("bit_depth_image") if isinstance(msg.get("bit_depth_image"), int) else None,
            detector=msg.get("detector_description")
            if isinstance(msg.get("detector_description"), str)
            else None,
            pixel_mask=masks.get(first) if first else None,
            flatfield=flats.get(first) if first else None,
            channels=channels,
            extra={
                "series_number": msg.get("series_id"),
                "detector_translation": list(trans) if isinstance(trans, (list, tuple)) else None,
                "incident_energy": energy,
                "goniometer": {k: dict(v) for k, v in gonio.items() if isinstance(v, Mapping)},
                "pixel_masks": masks,
                "flatfields": flats,
                "detector_serial_number": msg.get("detector_serial_number"),
                "sensor_material": msg.get("sensor_material"),
                "threshold_energy": dict(msg["threshold_energy"])
                if isinstance(msg.get("threshold_energy"), Mapping)
                else None,
            },
        )
        self._start(info, out)
        out.append(info)

    def _image(self, msg: Mapping[str, Any], out: list[Item]) -> None:
        sid = self._sid(msg)
        number = msg.get("image_id")
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise MalformedMessage("image-id", f"image_id {number!r}")
        data = msg.get("data")
        if not isinstance(data, Mapping) or not data:
            raise MalformedMessage("data", "image without a data map of channels")
        frames: list[Frame] = []
        now = time.monotonic()
        for channel, value in data.items():
            if not isinstance(value, MultiDim) or len(value.shape) != 2:
                raise MalformedMessage("data", f"channel {channel!r} is not a 2-D array (tag 40)")
            arr = np.empty(0)
            encoded = None
            if self.decode_pixels:
                try:
                    encoded = deferred_bslz4(value) if self.defer_bslz4 else None
                    arr = encoded.stand_in() if encoded is not None else to_array(value)
                except DecodeError as err:
                    raise MalformedMessage(
                        "decode", f"series {sid} image {number} channel {channel}: {err.reason}"
                    ) from err
            frames.append(
                Frame(
                    series_id=sid,
                    index=number + 1,
                    data=arr,
                    channel=str(channel),
                    received=now,
                    extra={"image_id": number},
                    encoded=encoded,
                )
            )
        dtype = str(frames[0].data.dtype) if self.decode_pixels else ""
        series = self._series_for_frame(sid, value.shape, dtype, out, tuple(str(c) for c in data))
        if series is None:
            return
        if not series.frame(number):
            self._note("duplicate", f"series {sid}: image {number} received twice; skipped")
            return
        for key in ("start_time", "stop_time", "real_time"):
            if isinstance(msg.get(key), (list, tuple)):
                for f in frames:
                    f.extra[key] = list(msg[key])
        out.extend(frames)


class Eiger2Source(PullSource):
    """Eiger Stream V2 over ZeroMQ PULL; see :class:`~mxcat.live.sources.eiger1.PullSource`."""

    decoder_class = Eiger2Decoder
