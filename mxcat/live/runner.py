"""The live runner: N worker processes analyse a detector stream; one collector aggregates.

Layout (all traffic is msgpack over ZeroMQ TCP on the loopback, never shared state)::

    detector PUSH ──► worker 1 PULL ─┐  results, series headers, ends  ┌─► collector PULL
                 └──► worker N PULL ─┴──────────── PUSH ───────────────┘
    collector PUB (control: series, flush, welcome, stop) ──► every worker SUB
    collector PUB (feed, optional) ──► viewers

**How series metadata reaches every worker.** A PUSH socket deals messages round-robin, so in
Stream V1 the ``dheader`` (and ``dseries_end``) reach one worker only. The worker that decodes a
header sends the :class:`~mxcat.live.frames.SeriesInfo` (geometry, mask) to the collector, which
keeps it and re-broadcasts it on the control PUB socket. A worker that gets frames of a series it
has no header for (its decoder announces the series with ``extra["header_missing"]``) asks the
collector (``need``), which re-publishes the header if it has it (this also covers workers that
subscribed late), and waits up to ``header_wait`` seconds for it; after that it analyses the
series without geometry (declared once in the log). Workers handshake (hello → welcome → ready)
before the runner reports them ready, so no broadcast is lost to a slow subscriber.

**Series end.** The worker that decodes the end forwards it; the collector then publishes
``flush`` for the series; each worker answers ``flushed`` (its received/dropped counts) once its
queue holds no more frames of that series and ``settle`` seconds have passed, so the answer
arrives after all its results (one PUSH pipe is ordered). The collector finalises the series when
every worker has flushed, or ``end_timeout`` seconds after the end.

**Overload policy.** Each worker has a receiver thread that drains its socket into a bounded queue
(``queue_size`` frames); when analysis falls behind, the *oldest* queued frame is dropped and
counted (headers and ends are never dropped). Memory per worker is therefore bounded by
``queue_size`` frames plus the socket's receive high-water mark (``rcvhwm`` messages).

**Decoding.** By default the receiver thread decodes each frame (bitshuffle's C decoder) while the
analysis thread works on the previous one. With the Eiger source option ``defer_bslz4``
(``source_options={"defer_bslz4": True}``) bitshuffle-LZ4 frames wait in the queue compressed
(framing checked on receipt) and the radial analysis decodes them a band of rows at a time while
each band is in cache (:func:`~mxcat.live.kernels.radial_spots.analyse_bslz4_radial`): the least
CPU per frame while the analysis keeps up. It is not the default: under overload a deferring
receiver drains the socket at the sender's rate, and the frames the queue then drops still cost
their receiving on the workers' cores, where decoding on receipt lets the socket's high-water
mark hold the sender back (measured: ``benchmarks/bench_stream.py``, see the project notes). A
block that does not decode counts as a failed frame of the worker rather than as a malformed
message of the source.

**Hits for CrystFEL (optional).** With ``hits_endpoint``, each worker also pushes every *hit*
frame (int32 pixels plus scalars, CrystFEL msgpack layout) to a :class:`~mxcat.live.hits_rep.HitServer`
thread of the runner, which buffers at most ``hits_buffer`` of them (drop-oldest, counted) and answers
each ``next`` on a REP socket at ``hits_endpoint`` with the oldest (see :mod:`mxcat.live.hits_rep`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack
import numpy as np
import zmq

from mxcat.live.frames import Frame, SeriesEnd, SeriesInfo

__all__ = ["DropOldestQueue", "PROTOCOLS", "RunSummary", "WorkerOptions", "info_from_wire", "info_to_wire", "run"]

log = logging.getLogger(__name__)

PROTOCOLS = ("eiger1", "eiger2", "msgpack")


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(buf: Any) -> Any:
    return msgpack.unpackb(buf, raw=False, strict_map_key=False)


# -- series metadata on the wire ---------------------------------------------------------------------

def _array_to_wire(a: np.ndarray | None) -> dict[str, Any] | None:
    if a is None:
        return None
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def _array_from_wire(d: dict[str, Any] | None) -> np.ndarray | None:
    if d is None:
        return None
    return np.frombuffer(d["data"], np.dtype(d["dtype"])).reshape(d["shape"]).copy()


def info_to_wire(info: SeriesInfo) -> dict[str, Any]:
    """A SeriesInfo as a msgpack-able map (arrays as dtype/shape/bytes; ``extra`` reduced to flags)."""
    out: dict[str, Any] = {}
    for f in fields(info):
        v = getattr(info, f.name)
        if f.name in ("pixel_mask", "flatfield"):
            out[f.name] = _array_to_wire(v)
        elif f.name == "extra":
            out[f.name] = {k: v[k] for k in ("header_missing", "header_detail") if k in v}
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        else:
            out[f.name] = v
    return out


def info_from_wire(d: dict[str, Any]) -> SeriesInfo:
    """Inverse of :func:`info_to_wire`."""
    kw = dict(d)
    for k in ("pixel_mask", "flatfield"):
        kw[k] = _array_from_wire(kw.get(k))
    if kw.get("shape") is not None:
        kw["shape"] = tuple(kw["shape"])
    kw["channels"] = tuple(kw.get("channels") or ())
    return SeriesInfo(**kw)


# -- the bounded queue -------------------------------------------------------------------------------

class DropOldestQueue:
    """A thread-safe FIFO holding at most ``maxsize`` frames; a full queue drops its oldest frame.

    Items that are not frames (series headers and ends) are never dropped and do not count
    towards ``maxsize``. :attr:`n_dropped` counts drops per series; :attr:`high_water` is the
    largest number of frames ever held.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be at least 1, not {maxsize}")
        self.maxsize = maxsize
        self._items: deque[Any] = deque()
        self._n_frames = 0
        self._cond = threading.Condition()
        self.n_dropped: dict[str, int] = {}
        self.high_water = 0

    def put(self, item: Any) -> None:
        with self._cond:
            if isinstance(item, Frame):
                if self._n_frames >= self.maxsize:
                    for k, old in enumerate(self._items):
                        if isinstance(old, Frame):
                            del self._items[k]
                            self._n_frames -= 1
                            self.n_dropped[old.series_id] = self.n_dropped.get(old.series_id, 0) + 1
                            break
                self._n_frames += 1
                self.high_water = max(self.high_water, self._n_frames)
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float) -> Any | None:
        """The oldest item, or None after ``timeout`` seconds."""
        with self._cond:
            if not self._items and not self._cond.wait(timeout):
                return None
            if not self._items:
                return None
            item = self._items.popleft()
            if isinstance(item, Frame):
                self._n_frames -= 1
            return item

    def holds_series(self, series_id: str) -> bool:
        with self._cond:
            return any(getattr(i, "series_id", None) == series_id for i in self._items)

    def __len__(self) -> int:
        with self._cond:
            return self._n_frames


# -- the worker --------------------------------------------------------------------------------------

@dataclass
class WorkerOptions:
    """What every worker is told (picklable; passed to spawned processes)."""

    source: str
    protocol: str
    results: str
    """Collector PULL endpoint."""
    control: str
    """Collector control PUB endpoint."""
    queue_size: int = 16
    rcvhwm: int = 16
    hit_min_spots: int = 30
    method: str = "radial"
    """Spot-finding method (``mxcat.live.kernels.METHODS``)."""
    header_wait: float = 10.0
    settle: float = 0.05
    slow: float = 0.0
    """Test hook: extra seconds of 'analysis' per frame, to provoke overload."""
    source_options: dict[str, Any] = field(default_factory=dict)
    hits: str | None = None
    """PULL endpoint of the hit server; None: hit frames are not forwarded."""


def open_source(protocol: str, endpoint: str, ctx: zmq.Context, *, rcvhwm: int = 16, **kw: Any) -> Any:
    """The source object for ``protocol`` (``eiger1``, ``eiger2``, ``msgpack``) connected to ``endpoint``."""
    if protocol in ("eiger1", "eiger2"):
        if protocol == "eiger1":
            from mxcat.live.sources.eiger1 import Eiger1Source as cls
        else:
            from mxcat.live.sources.eiger2 import Eiger2Source as cls
        src = cls(endpoint, ctx=ctx, rcvhwm=rcvhwm, **kw)
        src.decoder.quiet.add("no-header")  # the collector re-broadcasts headers: expected here, not a fault
        return src
    if protocol == "msgpack":
        from mxcat.live.sources.msgpack_source import MsgpackSource

        return MsgpackSource(endpoint, context=ctx, **kw)
    raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")


def _warm_up(bands: bool = False) -> None:
    """Compile (or load from cache) the numba kernels before the first frame arrives; with
    ``bands`` also the band-wise bslz4 analysis (workers whose source defers decoding)."""
    from mxcat.live.kernels import METHODS, SeriesConstants, analyse_frame, spot_separations
    from mxcat.live.kernels.radial_spots import analyse_bslz4_radial
    from mxcat.live.sources.decode import encode_bslz4, prepare_bslz4

    geometric = SeriesConstants.build(shape=(16, 16), beam_centre_x=8.0, beam_centre_y=8.0, pixel_size_x=75e-6,
                                      pixel_size_y=75e-6, distance=0.2, wavelength=1.0, n_bins=4)
    for c in (SeriesConstants.build_without_geometry(shape=(16, 16), n_bins=4), geometric):
        for dtype in (np.uint16, np.uint32, np.int32):  # every type detectors send gets compiled before "ready"
            img = np.zeros((16, 16), dtype)
            img[8, 8] = 50
            for method in METHODS:
                for saturation in (1000, None):  # a series without a saturation value compiles its own sweep
                    analyse_frame(img, constants=c, method=method, saturation_value=saturation)
            if bands:
                enc = prepare_bslz4(encode_bslz4(img, 64), dtype, img.shape)
                for saturation in (1000, None):
                    analyse_bslz4_radial(enc, constants=c, saturation_value=saturation)
    spot_separations(x=np.array([1.0, 5.0]), y=np.array([1.0, 5.0]), area_px=256.0)
    # the resolution estimators run only on frames with more than 10 spots: compile them here too
    from mxcat.live.kernels.resolution import distl_method_1, distl_method_2, estimate_d_min

    ds2 = np.linspace(0.01, 0.2, 40)
    estimate_d_min(dstar2=ds2, intensity=np.linspace(400.0, 10.0, 40), ice=np.zeros(40, bool))
    distl_method_1(dstar2=ds2)
    distl_method_2(dstar2=ds2)


def analyse_frame(frame: Frame, constants: Any, info: SeriesInfo, *, hit_min_spots: int, method: str = "radial",
                  workspace: Any = None) -> dict[str, Any]:
    """The compact result of one frame: statistics, spot count, radial sums, separation histogram."""
    from mxcat.live.kernels import analyse_frame as kernel
    from mxcat.live.kernels import spot_separations

    t0 = time.monotonic()
    if frame.encoded is not None and method == "radial":  # decoded a band at a time inside the analysis
        from mxcat.live.kernels.radial_spots import analyse_bslz4_radial

        enc = frame.encoded
        out = workspace.frame_buffer(enc.shape, enc.dtype) if workspace is not None else None  # reused: the frame
        frame.data, spots, st, rp = analyse_bslz4_radial(enc, constants=constants, workspace=workspace,  # is not kept
                                                         saturation_value=info.saturation_value,
                                                         hit_min_spots=hit_min_spots, out=out)
        frame.encoded = None
    else:
        spots, st, rp = kernel(frame.pixels(), constants=constants, method=method, workspace=workspace,
                               saturation_value=info.saturation_value, hit_min_spots=hit_min_spots)
    ok = np.isfinite(spots.x) & np.isfinite(spots.y)
    sep = spot_separations(x=spots.x[ok], y=spots.y[ok], area_px=float(constants.n_ok))
    d = spots.d
    d = d[np.isfinite(d) & (d > 0)]

    def num(v: Any) -> Any:
        if v is None:
            return None
        return None if (isinstance(v, float) and (v != v or v < 0)) else v

    stats = {
        "n_spots_total": int(st.n_spots_total),
        "n_spots_no_ice": int(st.n_spots_no_ice),
        "n_spots_4A": st.n_spots_4A,
        "total_intensity": float(st.total_intensity),
        "estimated_d_min": num(st.estimated_d_min),
        "d_min_distl_method_1": num(st.d_min_distl_method_1),
        "d_min_distl_method_2": num(st.d_min_distl_method_2),
        "noisiness_method_1": num(st.noisiness_method_1),
        "noisiness_method_2": num(st.noisiness_method_2),
        "hit": bool(st.hit),
        "background": num(float(st.background)),
        "saturated_fraction": float(st.saturated_fraction),
        "ice_ring_score": None if st.ice_ring_score is None else float(st.ice_ring_score),
        "peak_resolution": float(d.min()) if len(d) else None,
        "multi_lattice_score": float(sep.multi_lattice_score),
    }
    return {
        "t": "frame",
        "s": frame.series_id,
        "i": int(frame.index),
        "stats": stats,
        "rp_sums": np.asarray(rp.sums, np.float64).tobytes(),
        "rp_n": np.asarray(rp.n_pixels, np.int64).tobytes(),
        "sep": np.asarray(sep.counts, np.int64).tobytes(),
        "received": frame.received,
        "analysis": time.monotonic() - t0,
    }


KEEP_SERIES = 3
"""Series whose kernel constants a worker keeps (frames of an older series rebuild them)."""


def keep_recent(cache: dict[str, Any], key: str, value: Any, limit: int = KEEP_SERIES) -> Any:
    """Store *value* and forget the oldest entries beyond *limit* (kernel constants are tens of MB
    per series: a worker running for days must not keep every series it saw)."""
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > limit:
        cache.pop(next(iter(cache)))
    return value


def worker_main(wid: int, opts: WorkerOptions) -> None:
    """Body of one worker process (see the module docstring for the protocol)."""
    logging.basicConfig(level=logging.WARNING)
    from mxcat.live.kernels import SeriesConstants

    _warm_up(bands=bool(opts.source_options.get("defer_bslz4")))
    ctx = zmq.Context()
    ctx.setsockopt(zmq.RECONNECT_IVL, 20)  # a detector that binds late is joined quickly by every worker
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(opts.results)
    ctl = ctx.socket(zmq.SUB)
    ctl.setsockopt(zmq.LINGER, 0)
    ctl.setsockopt(zmq.SUBSCRIBE, b"")
    ctl.connect(opts.control)
    hits_sock = None
    n_hits_dropped = 0
    if opts.hits:
        from mxcat.live.hits_rep import send_hit, worker_hit_socket

        hits_sock = worker_hit_socket(ctx, opts.hits)
    queue = DropOldestQueue(opts.queue_size)
    from mxcat.live.kernels import make_workspace

    workspace = make_workspace(opts.method)
    received: dict[str, int] = {}
    channel_of: dict[str, str] = {}
    source = None
    try:
        # handshake: our subscription is live once a welcome addressed to us arrives
        deadline = time.monotonic() + 30.0
        welcomed = False
        while not welcomed and time.monotonic() < deadline:
            push.send(pack({"t": "hello", "w": wid}))
            if ctl.poll(100):
                topic, body = ctl.recv_multipart()
                if topic == b"welcome" and unpack(body).get("w") == wid:
                    welcomed = True
                elif topic == b"stop":
                    return
        if not welcomed:
            log.error("worker %d: no welcome from the collector; giving up", wid)
            return
        source = open_source(opts.protocol, opts.source, ctx, rcvhwm=opts.rcvhwm, **opts.source_options)

        def receive() -> None:
            try:
                for item in source:
                    if isinstance(item, Frame):
                        if item.channel is not None:  # several threshold channels: analyse the first only
                            if channel_of.setdefault(item.series_id, item.channel) != item.channel:
                                continue
                        received[item.series_id] = received.get(item.series_id, 0) + 1
                    queue.put(item)
            except Exception as err:  # the source died: tell the analysis loop
                log.exception("worker %d: source failed", wid)
                queue.put(("source-error", repr(err)))

        rx = threading.Thread(target=receive, name=f"mxcat-live-rx-{wid}", daemon=True)
        rx.start()
        push.send(pack({"t": "ready", "w": wid}))

        infos: dict[str, SeriesInfo] = {}
        provisional: dict[str, SeriesInfo] = {}
        constants: dict[str, Any] = {}
        flush: dict[str, float] = {}
        analysed: dict[str, int] = {}
        errors: dict[str, int] = {}
        first_sent: set[str] = set()
        degraded: set[str] = set()
        stop = False

        def control(timeout_ms: int = 0) -> None:
            nonlocal stop
            while ctl.poll(timeout_ms):
                timeout_ms = 0
                topic, body = ctl.recv_multipart()
                if topic == b"series":
                    info = info_from_wire(unpack(body))
                    if info.series_id not in infos:
                        infos[info.series_id] = info
                        constants.pop(info.series_id, None)
                elif topic == b"flush":
                    flush.setdefault(unpack(body)["s"], time.monotonic())
                elif topic == b"stop":
                    stop = True

        def wait_header(sid: str) -> SeriesInfo:
            end = time.monotonic() + opts.header_wait
            push.send(pack({"t": "need", "w": wid, "s": sid}))
            while sid not in infos and not stop and time.monotonic() < end:
                control(50)
            if sid in infos:
                return infos[sid]
            if sid not in degraded:
                degraded.add(sid)
                log.warning("worker %d: no header for series %s after %.1f s; analysing without geometry",
                            wid, sid, opts.header_wait)
            info = provisional.get(sid)
            infos[sid] = info
            return info

        while not stop:
            control()
            item = queue.get(0.05)
            if isinstance(item, SeriesInfo):
                if item.extra.get("header_missing"):
                    provisional[item.series_id] = item
                else:
                    infos[item.series_id] = item
                    constants.pop(item.series_id, None)
                    push.send(pack({"t": "series", "w": wid, "info": info_to_wire(item)}))
            elif isinstance(item, Frame):
                sid = item.series_id
                info = infos.get(sid) or wait_header(sid)
                if info is None:
                    info = SeriesInfo(series_id=sid, protocol=opts.protocol, shape=item.data.shape)
                    infos[sid] = info
                try:
                    c = constants.get(sid)
                    if c is None:
                        if info.shape is None or tuple(info.shape) != item.data.shape:
                            info.shape = item.data.shape
                        c = keep_recent(constants, sid, SeriesConstants.from_series(info))
                    msg = analyse_frame(item, c, info, hit_min_spots=opts.hit_min_spots, method=opts.method,
                                        workspace=workspace)
                    if hits_sock is not None and msg["stats"]["hit"]:
                        if not send_hit(hits_sock, item, info, n_spots=msg["stats"]["n_spots_total"]):
                            n_hits_dropped += 1
                    if opts.slow:
                        time.sleep(opts.slow)
                    msg.update(w=wid, q=len(queue), sent=time.monotonic())
                    if sid not in first_sent:
                        first_sent.add(sid)
                        msg["rp_edges"] = np.asarray(c.radial_edges, np.float64).tobytes()
                        msg["rp_axis"] = c.radial_axis
                    push.send(pack(msg))
                    analysed[sid] = analysed.get(sid, 0) + 1
                except Exception as err:  # one bad frame must not stop the stream
                    errors[sid] = errors.get(sid, 0) + 1
                    if errors[sid] == 1:
                        log.exception("worker %d: series %s frame %d failed", wid, sid, item.index)
                    push.send(pack({"t": "error", "w": wid, "s": sid, "i": int(item.index), "error": repr(err)}))
            elif isinstance(item, SeriesEnd):
                push.send(pack({"t": "end", "w": wid, "s": item.series_id,
                                "end": {"n_received": item.n_received, "n_malformed": item.n_malformed,
                                        "n_missing": item.n_missing, "n_out_of_order": item.n_out_of_order}}))
            elif isinstance(item, tuple) and item and item[0] == "source-error":
                push.send(pack({"t": "source_error", "w": wid, "error": item[1]}))
            now = time.monotonic()
            for sid, t in list(flush.items()):
                if now - t >= opts.settle and not queue.holds_series(sid):
                    push.send(pack({"t": "flushed", "w": wid, "s": sid, "n_received": received.get(sid, 0),
                                    "n_dropped": queue.n_dropped.get(sid, 0), "n_analysed": analysed.get(sid, 0),
                                    "n_errors": errors.get(sid, 0), "queue_high_water": queue.high_water}))
                    del flush[sid]
                    constants.pop(sid, None)  # the series is over for this worker
        push.send(pack({"t": "bye", "w": wid, "n_dropped": sum(queue.n_dropped.values()),
                        "queue_high_water": queue.high_water, "n_hits_dropped": n_hits_dropped}))
    finally:
        if source is not None:
            if hasattr(source, "stop"):
                source.stop()
            time.sleep(0.15)
            if hasattr(source, "close"):
                source.close()
        push.close(linger=2000)
        if hits_sock is not None:
            hits_sock.close(linger=1000)
        ctl.close(linger=0)
        ctx.term()


# -- the runner --------------------------------------------------------------------------------------

@dataclass
class RunSummary:
    """What :func:`run` returns: finished series summaries and the run's own counters."""

    series: list[Any]
    """:class:`~mxcat.live.collector.SeriesSummary` of each finished series, in order."""
    n_workers: int
    seconds: float
    n_results: int
    n_late: int
    receipts: list[Any] = field(default_factory=list)
    worker_exitcodes: list[int | None] = field(default_factory=list)
    hits: dict[str, Any] | None = None
    """Hit endpoint counters when ``hits_endpoint`` was given (see :meth:`HitServer.stats
    <mxcat.live.hits_rep.HitServer.stats>`) plus ``n_dropped_workers``, hits workers could not hand over."""


def _free_endpoint(sock: zmq.Socket, host: str = "127.0.0.1") -> str:
    port = sock.bind_to_random_port(f"tcp://{host}")
    return f"tcp://{host}:{port}"


def run(
    source_endpoint: str,
    *,
    protocol: str = "eiger1",
    workers: int = 2,
    feed: str | None = None,
    catalogue: Any = None,
    subject: Any = None,
    max_series: int | None = None,
    timeout: float | None = None,
    queue_size: int = 16,
    hit_min_spots: int = 30,
    method: str = "radial",
    header_wait: float = 10.0,
    end_timeout: float = 5.0,
    rotation: bool | None = None,
    start_method: str = "spawn",
    ready: Callable[[], None] | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    update_interval: float = 1.0,
    source_options: dict[str, Any] | None = None,
    slow: float = 0.0,
    hits_endpoint: str | None = None,
    hits_buffer: int = 16,
    hits_wait: float | None = 10.0,
    hits_drain: float = 0.0,
) -> RunSummary:
    """Analyse the stream at ``source_endpoint`` with ``workers`` processes until done.

    Stops after ``max_series`` finished series, after ``timeout`` seconds in total, or on
    KeyboardInterrupt (open series are then finalised as they stand). ``feed``: a PUB endpoint to
    bind for viewers (msgpack; topics ``frame``, ``summary``, ``series_end``). ``catalogue``: a
    :class:`mxcat.client.Catalogue`; each finished series is ingested as a batch for ``subject``
    (a :class:`mxcat.records.Subject` or a mapping of levels; see :mod:`mxcat.live.records`).
    ``ready`` is called once every worker is connected and subscribed; ``on_update`` every
    ``update_interval`` seconds with the collector's live status. ``slow`` is a test hook.

    ``hits_endpoint`` (e.g. ``tcp://*:5557``): bind a CrystFEL-compatible REP socket there that
    answers each request with the oldest of at most ``hits_buffer`` buffered hit frames, waiting up
    to ``hits_wait`` seconds (None: no limit) for one before answering "no hit"; after the run,
    buffered hits stay available for up to ``hits_drain`` seconds (see :mod:`mxcat.live.hits_rep`).
    """
    from mxcat.live.collector import Collector

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    if workers < 1:
        raise ValueError(f"need at least one worker, not {workers}")
    from mxcat.live.kernels import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown spot-finding method {method!r} (known: {', '.join(METHODS)})")
    t_start = time.monotonic()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    ctl = ctx.socket(zmq.PUB)
    ctl.setsockopt(zmq.LINGER, 0)
    feed_sock = None
    collector: Collector | None = None
    procs: list[Any] = []
    summary = RunSummary(series=[], n_workers=workers, seconds=0.0, n_results=0, n_late=0)
    hit_server = None
    try:
        hits_pull = None
        if hits_endpoint:
            from mxcat.live.hits_rep import HitServer

            hit_server = HitServer(hits_endpoint, max_hits=hits_buffer, wait=hits_wait, context=ctx)
            hits_pull = hit_server.start()
        results_ep = _free_endpoint(pull)
        control_ep = _free_endpoint(ctl)
        if feed:
            feed_sock = ctx.socket(zmq.PUB)
            feed_sock.setsockopt(zmq.LINGER, 0)
            feed_sock.setsockopt(zmq.SNDHWM, 1000)
            feed_sock.bind(feed)
        collector = Collector(n_workers=workers, publish=(lambda t, m: feed_sock.send_multipart([t, pack(m)]))
                              if feed_sock is not None else None,
                              control=lambda t, m: ctl.send_multipart([t, pack(m)]),
                              end_timeout=end_timeout, rotation=rotation)
        opts = WorkerOptions(source=source_endpoint, protocol=protocol, results=results_ep, control=control_ep,
                             queue_size=queue_size, rcvhwm=max(2, queue_size), hit_min_spots=hit_min_spots,
                             method=method, header_wait=header_wait, slow=slow, source_options=dict(source_options or {}),
                             hits=hits_pull)
        mpc = mp.get_context(start_method)
        for w in range(workers):
            p = mpc.Process(target=worker_main, args=(w, opts), name=f"mxcat-live-worker-{w}", daemon=True)
            p.start()
            procs.append(p)
        ready_called = False
        next_update = time.monotonic() + update_interval
        while True:
            now = time.monotonic()
            if timeout is not None and now - t_start > timeout:
                break
            if pull.poll(50):
                while True:
                    try:
                        body = pull.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    collector.handle(unpack(body))
            for s in collector.tick():
                summary.series.append(s)
                if catalogue is not None:
                    from mxcat.live.records import ingest_series

                    summary.receipts.append(ingest_series(catalogue, s, subject=subject))
            if not ready_called and collector.all_ready:
                ready_called = True
                if ready is not None:
                    ready()
            if on_update is not None and time.monotonic() >= next_update:
                next_update = time.monotonic() + update_interval
                on_update(collector.status())
            if max_series is not None and len(summary.series) >= max_series:
                break
            dead = [p for p in procs if not p.is_alive()]
            if dead and len(dead) == len(procs):
                log.error("all workers exited")
                break
    except KeyboardInterrupt:
        log.warning("interrupted; finishing open series as they stand")
    finally:
        try:
            for _ in range(3):
                ctl.send_multipart([b"stop", b""])
                time.sleep(0.05)
            t_end = time.monotonic() + 3.0
            while time.monotonic() < t_end and any(p.is_alive() for p in procs):
                if pull.poll(50) and collector is not None:
                    try:
                        collector.handle(unpack(pull.recv(zmq.NOBLOCK)))
                    except zmq.Again:
                        pass
            if collector is not None:
                for s in collector.finish_all():
                    summary.series.append(s)
                    if catalogue is not None:
                        from mxcat.live.records import ingest_series

                        summary.receipts.append(ingest_series(catalogue, s, subject=subject))
                summary.n_results = collector.n_results
                summary.n_late = collector.n_late
        finally:
            deadline = time.monotonic() + 8.0  # a loaded machine may need a while to flush and exit
            for p in procs:
                p.join(timeout=max(0.1, deadline - time.monotonic()))
                if p.is_alive():
                    log.warning("worker %s did not stop in time: terminated", p.name)
                    p.terminate()
                    p.join(timeout=2.0)
                summary.worker_exitcodes.append(p.exitcode)
            if hit_server is not None:
                summary.hits = hit_server.close(drain=hits_drain)
                summary.hits["n_dropped_workers"] = sum(int(b.get("n_hits_dropped", 0))
                                                        for b in (collector.byes.values() if collector else ()))
            for s in (pull, ctl, feed_sock):
                if s is not None:
                    s.close(linger=0)
            ctx.term()
    summary.seconds = time.monotonic() - t_start
    return summary


def iter_endpoints(text: str) -> Iterable[str]:
    """Split a comma-separated endpoint list."""
    return [e.strip() for e in text.split(",") if e.strip()]
