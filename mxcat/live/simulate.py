"""A detector simulator: PUSHes Eiger Stream V1 (default) or V2 messages of synthetic or given frames.

:func:`synthetic_frame` makes one seeded frame (Poisson background, Gaussian spots, Eiger module
gaps and a few dead pixels as the 2^n − 1 sentinel) and returns the true spot list with it;
:func:`synthetic_series` the frames of one series, reproducibly (frame ``i`` uses seed
``(seed, i)``), so a test can regenerate exactly what a subprocess sent. :func:`serve` binds a
PUSH socket and sends header, images (at ``rate`` per second, or as fast as the peer takes them)
and end, in the encodings of :mod:`mxcat.live.sources.decode`. ``python -m mxcat.live.simulate``
runs it from the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
import numpy as np
import zmq

from mxcat.live.sources.decode import ENCODINGS, encode, encode_bslz4, encode_lz4_framed

__all__ = [
    "Geometry",
    "Spot",
    "serve",
    "synthetic_frame",
    "synthetic_series",
    "encoding_default_dtype",
    "main",
]

EIGER_MODULE = (514, 1030)
EIGER_GAP = (37, 10)


@dataclass(frozen=True)
class Spot:
    """A true spot: centre (slow, fast) in pixels, integrated intensity (counts), Gaussian sigma."""

    y: float
    x: float
    intensity: float
    sigma: float


@dataclass
class Geometry:
    """What the header announces (metres, ångström); defaults are an Eiger-like small detector."""

    pixel_size: float = 75e-6
    distance: float = 0.2
    wavelength: float = 0.9763
    beam_centre: tuple[float, float] | None = None
    """(x, y) in pixels; None: the image centre."""
    count_time: float = 0.01
    omega_start: float = 0.0
    omega_increment: float = 0.1
    description: str = "mxcat simulated EIGER"
    extra: dict[str, Any] = field(default_factory=dict)


def encoding_default_dtype(encoding: str) -> np.dtype:
    """uint8/16/32 for ``bs8/16/32-lz4<``; uint32 otherwise."""
    if encoding.startswith("bs"):
        return np.dtype(f"<u{int(encoding[2:].split('-')[0]) // 8}")
    return np.dtype("<u4")


def gap_mask(
    shape: tuple[int, int], module: tuple[int, int] = EIGER_MODULE, gap: tuple[int, int] = EIGER_GAP
) -> np.ndarray:
    """True on the inter-module gaps of an Eiger-like tiling of ``shape``."""
    mask = np.zeros(shape, bool)
    for axis in (0, 1):
        period = module[axis] + gap[axis]
        idx = np.arange(shape[axis]) % period >= module[axis]
        if axis == 0:
            mask[idx, :] = True
        else:
            mask[:, idx] = True
    return mask


def synthetic_frame(
    *,
    shape: tuple[int, int] = (514, 1030),
    dtype: Any = "<u4",
    seed: int | Sequence[int] = 0,
    background: float = 0.5,
    n_spots: int = 50,
    intensity: tuple[float, float] = (200.0, 5000.0),
    sigma: tuple[float, float] = (0.7, 1.5),
    gaps: bool = True,
    n_dead: int = 10,
) -> tuple[np.ndarray, list[Spot]]:
    """One frame and its true spots; gap and dead pixels hold the sentinel 2^n − 1, counts saturate below it."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    sentinel = np.iinfo(dt).max
    ny, nx = shape
    expected = np.full(shape, background, np.float64)
    bad = gap_mask(shape) if gaps else np.zeros(shape, bool)
    spots: list[Spot] = []
    half = 5
    while len(spots) < n_spots and ny > 2 * half and nx > 2 * half:
        y, x = rng.uniform(half, ny - half - 1), rng.uniform(half, nx - half - 1)
        iy, ix = int(round(y)), int(round(x))
        if bad[iy - 2 : iy + 3, ix - 2 : ix + 3].any():
            continue
        s = float(rng.uniform(*sigma))
        total = float(rng.uniform(*intensity))
        yy, xx = np.mgrid[iy - half : iy + half + 1, ix - half : ix + half + 1]
        g = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
        expected[iy - half : iy + half + 1, ix - half : ix + half + 1] += total * g / g.sum()
        spots.append(Spot(y, x, total, s))
    counts = rng.poisson(expected)
    np.minimum(counts, sentinel - 1, out=counts)
    frame = counts.astype(dt)
    if n_dead:
        frame.flat[rng.integers(0, frame.size, n_dead)] = sentinel
    frame[bad] = sentinel
    return frame, spots


def synthetic_series(
    n_images: int, *, seed: int = 0, channel: int = 0, **kw: Any
) -> Iterator[tuple[np.ndarray, list[Spot]]]:
    """Frames 0 … n_images − 1 of a series; frame ``i`` of ``channel`` is seeded by ``(seed, channel, i)``."""
    for i in range(n_images):
        yield synthetic_frame(seed=(seed, channel, i), **kw)


def _v1_header(
    series: int,
    shape: tuple[int, int],
    dtype: np.dtype,
    n_images: int,
    geo: Geometry,
    encoding: str,
    detail: str,
    mask: np.ndarray | None,
) -> list[bytes]:
    bx, by = geo.beam_centre or (shape[1] / 2, shape[0] / 2)
    cfg = {
        "beam_center_x": bx,
        "beam_center_y": by,
        "detector_distance": geo.distance,
        "wavelength": geo.wavelength,
        "x_pixel_size": geo.pixel_size,
        "y_pixel_size": geo.pixel_size,
        "count_time": geo.count_time,
        "frame_time": geo.count_time,
        "omega_start": geo.omega_start,
        "omega_increment": geo.omega_increment,
        "countrate_correction_count_cutoff": int(np.iinfo(dtype).max) - 1,
        "bit_depth_image": dtype.itemsize * 8,
        "nimages": n_images,
        "ntrigger": 1,
        "description": geo.description,
        "x_pixels_in_detector": shape[1],
        "y_pixels_in_detector": shape[0],
        "compression": "lz4" if encoding == "lz4<" else "bslz4",
        **geo.extra,
    }
    parts = [json.dumps({"htype": "dheader-1.0", "header_detail": detail, "series": series}).encode()]
    if detail in ("basic", "all"):
        parts.append(json.dumps(cfg).encode())
    if detail == "all":
        m = mask if mask is not None else np.zeros(shape, "<u4")
        for htype, arr in (
            ("dflatfield-1.0", np.ones(shape, "<f4")),
            ("dpixelmask-1.0", m.astype("<u4")),
            ("dcountrate_table-1.0", np.zeros((2, 8), "<f4")),
        ):
            parts.append(
                json.dumps(
                    {
                        "htype": htype,
                        "shape": [arr.shape[1], arr.shape[0]],
                        "type": str(arr.dtype.newbyteorder("=")),
                    }
                ).encode()
            )
            parts.append(arr.tobytes())
    return parts


def v1_image(
    series: int, number: int, frame: np.ndarray, encoding: str, t0: int = 0, period_ns: int = 10_000_000
) -> list[bytes]:
    """The four parts of a Stream V1 image message."""
    blob = encode(encoding, frame)
    return [
        json.dumps(
            {"htype": "dimage-1.0", "series": series, "frame": number, "hash": hashlib.md5(blob).hexdigest()}
        ).encode(),
        json.dumps(
            {
                "htype": "dimage_d-1.0",
                "shape": [frame.shape[1], frame.shape[0]],
                "type": str(frame.dtype.newbyteorder("=")),
                "encoding": encoding,
                "size": len(blob),
            }
        ).encode(),
        blob,
        json.dumps(
            {
                "htype": "dconfig-1.0",
                "start_time": t0 + number * period_ns,
                "stop_time": t0 + (number + 1) * period_ns,
                "real_time": period_ns,
            }
        ).encode(),
    ]


_TYPED_TAG = {
    "<u1": 64,
    "<u2": 69,
    "<u4": 70,
    "<u8": 71,
    "<i1": 72,
    "<i2": 77,
    "<i4": 78,
    "<i8": 79,
    "<f4": 85,
    "<f8": 86,
}


def v2_array(arr: np.ndarray, encoding: str) -> cbor2.CBORTag:
    """Tag 40 + typed array, compressed as Stream V2 does (bslz4 for ``bs*``, lz4 for ``lz4<``)."""
    a = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    key = a.dtype.str.replace("|", "<")
    payload: Any
    if encoding.startswith("bs"):
        payload = cbor2.CBORTag(56500, ["bslz4", a.itemsize, encode_bslz4(a)])
    elif encoding == "lz4<":
        payload = cbor2.CBORTag(56500, ["lz4", a.itemsize, encode_lz4_framed(a)])
    else:
        payload = a.tobytes()
    return cbor2.CBORTag(40, [list(a.shape), cbor2.CBORTag(_TYPED_TAG[key], payload)])


def _v2(msg: dict[str, Any]) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(55799, msg))


def serve(
    endpoint: str,
    *,
    protocol: str = "eiger1",
    n_images: int = 10,
    shape: tuple[int, int] = (514, 1030),
    rate: float | None = None,
    encoding: str = "bs32-lz4<",
    dtype: Any = None,
    seed: int = 0,
    geometry: Geometry | None = None,
    frames: Sequence[np.ndarray] | None = None,
    channels: Sequence[str] = ("threshold_1",),
    series: int = 1,
    header_detail: str = "basic",
    n_series: int = 1,
    ctx: zmq.Context | None = None,
    send_timeout: float = 30.0,
    bind: bool = True,
    **synthetic: Any,
) -> dict[str, Any]:
    """Send ``n_series`` series of ``n_images`` frames (or ``frames``) over PUSH; returns what was sent.

    The return value has ``spots`` (per series, per frame: the true :class:`Spot` list of the first
    channel; empty for given ``frames``), ``n_sent`` and ``seconds``. Raises ``zmq.Again`` when no
    peer takes a message for ``send_timeout`` seconds.
    """
    if protocol not in ("eiger1", "eiger2"):
        raise ValueError(f"unknown protocol {protocol!r} (known: eiger1, eiger2)")
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r} (known: {', '.join(ENCODINGS)})")
    geo = geometry or Geometry()
    dt = np.dtype(dtype).newbyteorder("<") if dtype is not None else encoding_default_dtype(encoding)
    if frames is not None:
        n_images = len(frames)
        shape = tuple(frames[0].shape)  # type: ignore[assignment]
        dt = frames[0].dtype.newbyteorder("<")
    own = ctx is None
    ctx = ctx or zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, int(send_timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(send_timeout * 1000))
    (sock.bind if bind else sock.connect)(endpoint)
    t_start = time.monotonic()
    all_spots: list[list[list[Spot]]] = []
    n_sent = 0
    try:
        for k in range(n_series):
            sid = series + k
            uid = f"mxcat-sim-{seed}-{sid}"
            mask = gap_mask(shape).astype("<u4") if frames is None else None
            bx, by = geo.beam_centre or (shape[1] / 2, shape[0] / 2)
            if protocol == "eiger1":
                sock.send_multipart(_v1_header(sid, shape, dt, n_images, geo, encoding, header_detail, mask))
            else:
                start = {
                    "type": "start",
                    "series_id": sid,
                    "series_unique_id": uid,
                    "channels": list(channels),
                    "image_size_x": shape[1],
                    "image_size_y": shape[0],
                    "pixel_size_x": geo.pixel_size,
                    "pixel_size_y": geo.pixel_size,
                    "beam_center_x": bx,
                    "beam_center_y": by,
                    "detector_translation": [0.0, 0.0, geo.distance],
                    "incident_wavelength": geo.wavelength,
                    "incident_energy": 12398.419843320026 / geo.wavelength,
                    "count_time": geo.count_time,
                    "frame_time": geo.count_time,
                    "number_of_images": n_images,
                    "saturation_value": int(np.iinfo(dt).max) - 1,
                    "bit_depth_image": dt.itemsize * 8,
                    "detector_description": geo.description,
                    "goniometer": {"omega": {"start": geo.omega_start, "increment": geo.omega_increment}},
                }
                if mask is not None:
                    start["pixel_mask"] = {c: v2_array(mask, "bs32-lz4<") for c in channels}
                sock.send(_v2(start))
            gens = (
                [
                    synthetic_series(n_images, seed=seed + k, channel=c, shape=shape, dtype=dt, **synthetic)
                    for c in range(len(channels))
                ]
                if frames is None
                else None
            )
            spots: list[list[Spot]] = []
            for i in range(n_images):
                if gens is None:
                    imgs = [np.asarray(frames[i])] * len(channels)  # type: ignore[index]
                    spots.append([])
                else:
                    made = [next(g) for g in gens]
                    imgs = [m[0] for m in made]
                    spots.append(made[0][1])
                if rate:
                    delay = t_start + n_sent / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if protocol == "eiger1":
                    sock.send_multipart(v1_image(sid, i, imgs[0], encoding))
                else:
                    sock.send(
                        _v2(
                            {
                                "type": "image",
                                "series_id": sid,
                                "series_unique_id": uid,
                                "image_id": i,
                                "real_time": [10_000_000, 1_000_000_000],
                                "data": {
                                    c: v2_array(a, encoding) for c, a in zip(channels, imgs, strict=True)
                                },
                            }
                        )
                    )
                n_sent += 1
            if protocol == "eiger1":
                sock.send_multipart([json.dumps({"htype": "dseries_end-1.0", "series": sid}).encode()])
            else:
                sock.send(_v2({"type": "end", "series_id": sid, "series_unique_id": uid}))
            all_spots.append(spots)
    finally:
        sock.close()
        if own:
            ctx.term()
    return {"spots": all_spots, "n_sent": n_sent, "seconds": time.monotonic() - t_start}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mxcat.live.simulate tcp://*:9999 --protocol eiger2 --n-images 100 --rate 50``."""
    p = argparse.ArgumentParser(prog="mxcat-simulate", description=__doc__.splitlines()[0])
    p.add_argument("endpoint")
    p.add_argument("--protocol", choices=("eiger1", "eiger2"), default="eiger1")
    p.add_argument("--n-images", type=int, default=10)
    p.add_argument("--shape", type=int, nargs=2, default=(514, 1030), metavar=("SLOW", "FAST"))
    p.add_argument("--rate", type=float, default=None, help="frames per second (default: as fast as taken)")
    p.add_argument("--encoding", choices=ENCODINGS, default="bs32-lz4<")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--series", type=int, default=1)
    p.add_argument("--n-series", type=int, default=1)
    p.add_argument("--header-detail", choices=("none", "basic", "all"), default="basic")
    p.add_argument("--n-spots", type=int, default=50)
    a = p.parse_args(argv)
    res = serve(
        a.endpoint,
        protocol=a.protocol,
        n_images=a.n_images,
        shape=tuple(a.shape),
        rate=a.rate,
        encoding=a.encoding,
        seed=a.seed,
        series=a.series,
        n_series=a.n_series,
        header_detail=a.header_detail,
        n_spots=a.n_spots,
    )
    print(f"sent {res['n_sent']} frames in {res['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
