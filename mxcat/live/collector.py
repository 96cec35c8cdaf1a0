"""The collector of the live runner: per-series aggregation of worker results, feed and lag.

:class:`Collector` is fed the msgpack maps workers send (:meth:`Collector.handle`), answers the
control handshake, re-broadcasts series headers (see :mod:`mxcat.live.runner`), and keeps one
:class:`SeriesAggregate` per series: per-frame rows, summed radial profile and separation
histogram, lag and throughput. :meth:`Collector.tick` finalises series whose end was seen once
every worker has flushed them (or ``end_timeout`` later) and returns their :class:`SeriesSummary`.

Definitions. *Hit rate*: hits / frames analysed × 100 (a hit as the kernel decides: at least
``hit_min_spots`` spots outside ice rings). *Resolution estimate*: median ``estimated_d_min`` of
the hits; *best*: the smallest. *Lag*: collector arrival time − time the worker's source had the
frame (same host, ``time.monotonic``); the summary gives the mean over the last 10 frames.
*Decay* (rotation data only: the header gives a non-zero ``omega_increment``, or ``rotation=True``):
ordinary least squares of spot count (all frames) and of ``estimated_d_min`` (hits) against image
number, with at least 10 points; a trend is *significant* when |slope / standard error| ≥ 3, and
it *warns* when the spot count falls by at least 20 % of its fitted starting value over the
series, or the resolution worsens (d grows) by at least 10 % of its fitted starting value.
Slopes are reported per 100 images (spot count as a percentage of the fitted start).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Collector", "DecayFit", "SeriesAggregate", "SeriesSummary", "decay_fit", "linear_fit"]

log = logging.getLogger(__name__)

SEPARATION_BIN_PX = 1.0
"""Bin width of the separation histogram the workers compute (``spot_separations`` default)."""


@dataclass
class LinearFit:
    slope: float
    intercept: float
    slope_se: float
    n: int

    @property
    def t(self) -> float:
        if self.slope_se == 0:
            return math.copysign(math.inf, self.slope) if self.slope else 0.0
        return self.slope / self.slope_se


def linear_fit(x: np.ndarray, y: np.ndarray) -> LinearFit | None:
    """Ordinary least squares y = a + b x with the standard error of b; None below 3 points."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    n = len(x)
    if n < 3:
        return None
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx == 0:
        return None
    b = float(((x - xm) * (y - ym)).sum() / sxx)
    a = float(ym - b * xm)
    resid = y - (a + b * x)
    s2 = float((resid**2).sum() / (n - 2))
    return LinearFit(slope=b, intercept=a, slope_se=math.sqrt(s2 / sxx), n=n)


@dataclass
class DecayFit:
    """Result of the decay analysis (see the module docstring for the rule)."""

    spot_slope_percent: float | None = None
    """Fitted change of the spot count per 100 images, % of the fitted count at the first image."""
    spot_t: float | None = None
    resolution_slope: float | None = None
    """Fitted change of the resolution estimate per 100 images (Å; positive: getting worse)."""
    resolution_t: float | None = None
    spot_warning: bool = False
    resolution_warning: bool = False

    @property
    def warning(self) -> bool:
        return self.spot_warning or self.resolution_warning


def decay_fit(images: np.ndarray, spots: np.ndarray, d_images: np.ndarray, d_min: np.ndarray, *,
              min_points: int = 10, t_crit: float = 3.0, spot_fall: float = 0.2, d_rise: float = 0.1) -> DecayFit:
    """Decay of spot count and resolution with image number (rule in the module docstring)."""
    out = DecayFit()
    images = np.asarray(images, float)
    if len(images) >= min_points:
        f = linear_fit(images, spots)
        if f is not None:
            first, last = float(images.min()), float(images.max())
            start = f.intercept + f.slope * first
            out.spot_t = f.t
            if start > 0:
                out.spot_slope_percent = 100.0 * f.slope * 100.0 / start
                out.spot_warning = f.t <= -t_crit and -f.slope * (last - first) >= spot_fall * start
    d_images = np.asarray(d_images, float)
    if len(d_images) >= min_points:
        f = linear_fit(d_images, d_min)
        if f is not None:
            first, last = float(d_images.min()), float(d_images.max())
            start = f.intercept + f.slope * first
            out.resolution_slope = 100.0 * f.slope
            out.resolution_t = f.t
            out.resolution_warning = f.t >= t_crit and start > 0 and f.slope * (last - first) >= d_rise * start
    return out


@dataclass
class SeriesSummary:
    """A finished (or, when ``complete`` is False, cut-short) series."""

    series_id: str
    info: dict[str, Any] | None
    complete: bool
    n_frames: int
    n_expected: int | None
    n_received: int
    n_dropped: int
    n_missing: int | None
    n_malformed: int
    n_errors: int
    n_duplicates: int
    n_late: int
    n_hits: int
    hit_rate: float | None
    spot_count_mean: float | None
    spot_count_median: float | None
    spot_count_max: int | None
    spot_count_hits_mean: float | None
    resolution_estimate: float | None
    resolution_best: float | None
    ice_ring_score_mean: float | None
    saturated_fraction_max: float | None
    background_mean: float | None
    multiple_lattice_score: float | None
    frame_rate: float | None
    lag: float | None
    lag_max: float | None
    rotation: bool
    decay: DecayFit | None
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)
    radial_axis: str | None = None
    radial_edges: np.ndarray | None = field(default=None, repr=False)
    radial_sums: np.ndarray | None = field(default=None, repr=False)
    radial_n_pixels: np.ndarray | None = field(default=None, repr=False)
    separation_edges: np.ndarray | None = field(default=None, repr=False)
    separation_counts: np.ndarray | None = field(default=None, repr=False)
    workers: dict[int, int] = field(default_factory=dict)
    """Frames analysed per worker."""

    def scalars(self) -> dict[str, Any]:
        """The scalar fields (for printing and the feed)."""
        skip = {"rows", "radial_edges", "radial_sums", "radial_n_pixels", "separation_edges", "separation_counts", "info",
                "decay", "workers"}
        d = {k: v for k, v in vars(self).items() if k not in skip}
        d["decay_warning"] = None if self.decay is None else self.decay.warning
        if self.decay is not None:
            d["decay_spot_slope"] = self.decay.spot_slope_percent
            d["decay_resolution_slope"] = self.decay.resolution_slope
        return d


def _mean(v: list[float]) -> float | None:
    return float(np.mean(v)) if v else None


class SeriesAggregate:
    """Everything the collector keeps about one series while it runs."""

    def __init__(self, series_id: str, *, rolling: int = 50) -> None:
        self.series_id = series_id
        self.info: dict[str, Any] | None = None
        self.rows: dict[int, dict[str, Any]] = {}
        self.n_duplicates = 0
        self.n_errors = 0
        self.n_late = 0
        self.rp_sums: np.ndarray | None = None
        self.rp_n: np.ndarray | None = None
        self.rp_edges: np.ndarray | None = None
        self.rp_axis: str | None = None
        self.sep: np.ndarray | None = None
        self.ends: list[dict[str, Any]] = []
        self.end_time: float | None = None
        self.flush_sent: float | None = None
        self.flushed: dict[int, dict[str, Any]] = {}
        self.first_result: float | None = None
        self.last_result: float | None = None
        self.lags: deque[float] = deque(maxlen=10)
        self.lag_max = 0.0
        self.recent: deque[tuple[int, bool]] = deque(maxlen=rolling)
        self.workers: dict[int, int] = {}

    def add(self, msg: dict[str, Any], now: float) -> dict[str, Any] | None:
        """Add one frame result; the per-frame row, or None for a duplicate."""
        i = int(msg["i"])
        if i in self.rows:
            self.n_duplicates += 1
            return None
        st = msg["stats"]
        lag = None
        if msg.get("received") is not None:
            lag = max(0.0, now - float(msg["received"]))
            self.lags.append(lag)
            self.lag_max = max(self.lag_max, lag)
        row = {"image_number": i, **st, "worker": msg.get("w"), "lag": lag, "analysis": msg.get("analysis")}
        self.rows[i] = row
        w = int(msg.get("w", -1))
        self.workers[w] = self.workers.get(w, 0) + 1
        if msg.get("rp_edges") is not None and self.rp_edges is None:
            self.rp_edges = np.frombuffer(msg["rp_edges"], np.float64).copy()
            self.rp_axis = msg.get("rp_axis")
        sums = np.frombuffer(msg["rp_sums"], np.float64)
        n = np.frombuffer(msg["rp_n"], np.int64)
        if self.rp_sums is None or len(self.rp_sums) != len(sums):
            self.rp_sums, self.rp_n = sums.copy(), n.copy()
        else:
            self.rp_sums += sums
            self.rp_n += n
        sep = np.frombuffer(msg["sep"], np.int64)
        if self.sep is None or len(self.sep) != len(sep):
            self.sep = sep.copy()
        else:
            self.sep += sep
        self.first_result = now if self.first_result is None else self.first_result
        self.last_result = now
        self.recent.append((int(st["n_spots_total"]), bool(st["hit"])))
        return row

    def live(self) -> dict[str, Any]:
        """Running numbers for the feed and the console."""
        n = len(self.rows)
        hits = sum(1 for r in self.rows.values() if r["hit"])
        rec = list(self.recent)
        return {
            "series": self.series_id,
            "n_frames": n,
            "n_hits": hits,
            "hit_rate": 100.0 * hits / n if n else None,
            "rolling_hit_rate": 100.0 * sum(h for _, h in rec) / len(rec) if rec else None,
            "rolling_spot_count": _mean([s for s, _ in rec]),
            "lag": _mean(list(self.lags)),
            "n_expected": (self.info or {}).get("n_images"),
        }

    def summarise(self, *, complete: bool, rotation: bool | None) -> SeriesSummary:
        rows = [self.rows[k] for k in sorted(self.rows)]
        n = len(rows)
        spots = [int(r["n_spots_total"]) for r in rows]
        hits = [r for r in rows if r["hit"]]
        d_hits = [(r["image_number"], r["estimated_d_min"]) for r in hits if r.get("estimated_d_min")]
        info = self.info or {}
        n_expected = info.get("n_images")
        if self.flushed:
            n_received = sum(int(f["n_received"]) for f in self.flushed.values())
            n_dropped = sum(int(f["n_dropped"]) for f in self.flushed.values())
        else:
            n_received, n_dropped = n + self.n_errors, 0
        n_received = max(n_received, n + self.n_errors)
        is_rotation = bool(info.get("omega_increment")) if rotation is None else rotation
        decay = None
        if is_rotation and n:
            img = np.array([r["image_number"] for r in rows], float)
            decay = decay_fit(img, np.array(spots, float), np.array([a for a, _ in d_hits], float),
                              np.array([b for _, b in d_hits], float))
        span = (self.last_result or 0) - (self.first_result or 0)
        sep_edges = None if self.sep is None else np.arange(len(self.sep) + 1) * SEPARATION_BIN_PX
        mls = [r["multi_lattice_score"] for r in hits if r.get("multi_lattice_score") is not None]
        ice = [r["ice_ring_score"] for r in rows if r.get("ice_ring_score") is not None]
        bg = [r["background"] for r in rows if r.get("background") is not None]
        return SeriesSummary(
            series_id=self.series_id, info=self.info, complete=complete, n_frames=n, n_expected=n_expected,
            n_received=n_received, n_dropped=n_dropped,
            n_missing=max(0, int(n_expected) - n_received) if n_expected else None,
            n_malformed=sum(int(e.get("n_malformed", 0)) for e in self.ends), n_errors=self.n_errors,
            n_duplicates=self.n_duplicates, n_late=self.n_late, n_hits=len(hits),
            hit_rate=100.0 * len(hits) / n if n else None,
            spot_count_mean=float(np.mean(spots)) if spots else None,
            spot_count_median=float(np.median(spots)) if spots else None,
            spot_count_max=max(spots) if spots else None,
            spot_count_hits_mean=_mean([r["n_spots_total"] for r in hits]),
            resolution_estimate=float(np.median([b for _, b in d_hits])) if d_hits else None,
            resolution_best=min(b for _, b in d_hits) if d_hits else None,
            ice_ring_score_mean=_mean(ice), saturated_fraction_max=max((r["saturated_fraction"] for r in rows), default=None),
            background_mean=_mean(bg), multiple_lattice_score=_mean(mls),
            frame_rate=(n - 1) / span if n > 1 and span > 0 else None,
            lag=_mean(list(self.lags)), lag_max=self.lag_max if self.lags else None,
            rotation=is_rotation, decay=decay, rows=rows, radial_axis=self.rp_axis, radial_edges=self.rp_edges,
            radial_sums=self.rp_sums, radial_n_pixels=self.rp_n, separation_edges=sep_edges,
            separation_counts=self.sep, workers=dict(self.workers),
        )


Sender = Callable[[bytes, dict[str, Any]], None]


class Collector:
    """Aggregates worker results per series (see the module docstring).

    ``publish(topic, map)`` sends to the viewer feed (topics ``frame``, ``summary``,
    ``series_end``); ``control(topic, map)`` to the workers (``welcome``, ``series``, ``flush``).
    Both may be None (tests feed :meth:`handle` directly).
    """

    def __init__(self, *, n_workers: int = 1, publish: Sender | None = None, control: Sender | None = None,
                 end_timeout: float = 5.0, rotation: bool | None = None, rolling: int = 50,
                 publish_interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.n_workers = n_workers
        self.publish = publish
        self.control = control
        self.end_timeout = end_timeout
        self.rotation = rotation
        self.rolling = rolling
        self.publish_interval = publish_interval
        self.clock = clock
        self.series: dict[str, SeriesAggregate] = {}
        self.finished: dict[str, SeriesSummary] = {}
        self.ready: set[int] = set()
        self.byes: dict[int, dict[str, Any]] = {}
        self.n_results = 0
        self.n_late = 0
        self.t_start = clock()
        self._arrivals: deque[float] = deque(maxlen=200)
        self._next_publish = 0.0
        self._current: str | None = None

    @property
    def all_ready(self) -> bool:
        return len(self.ready) >= self.n_workers

    def _agg(self, sid: str) -> SeriesAggregate:
        agg = self.series.get(sid)
        if agg is None:
            agg = self.series[sid] = SeriesAggregate(sid, rolling=self.rolling)
        return agg

    def _send(self, fn: Sender | None, topic: bytes, msg: dict[str, Any]) -> None:
        if fn is not None:
            fn(topic, msg)

    def handle(self, msg: dict[str, Any]) -> None:
        """Take one message from a worker."""
        t = msg.get("t")
        now = self.clock()
        if t == "frame":
            self.n_results += 1
            self._arrivals.append(now)
            sid = str(msg["s"])
            if sid in self.finished:
                self.n_late += 1
                self.finished[sid].n_late += 1
                return
            agg = self._agg(sid)
            self._current = sid
            row = agg.add(msg, now)
            if row is not None and self.publish is not None:
                self.publish(b"frame", {"series": sid, "image": row["image_number"], "worker": row["worker"],
                                        "n_spots": row["n_spots_total"], "hit": row["hit"],
                                        "d_min": row.get("estimated_d_min"), "lag": row["lag"]})
        elif t == "hello":
            self._send(self.control, b"welcome", {"w": msg["w"]})
        elif t == "ready":
            self.ready.add(int(msg["w"]))
        elif t == "series":
            info = msg["info"]
            sid = str(info["series_id"])
            agg = self._agg(sid)
            if agg.info is None or (agg.info.get("extra") or {}).get("header_missing"):
                agg.info = info
                self._send(self.control, b"series", info)
                if self.publish is not None:
                    self.publish(b"series", {k: v for k, v in info.items() if k not in ("pixel_mask", "flatfield")})
        elif t == "need":
            agg = self.series.get(str(msg["s"]))
            if agg is not None and agg.info is not None:
                self._send(self.control, b"series", agg.info)
        elif t == "error":
            sid = str(msg["s"])
            if sid not in self.finished:
                self._agg(sid).n_errors += 1
        elif t == "end":
            sid = str(msg["s"])
            if sid in self.finished:
                return
            agg = self._agg(sid)
            agg.ends.append(msg.get("end") or {})
            if agg.end_time is None:
                agg.end_time = now
                agg.flush_sent = now
                self._send(self.control, b"flush", {"s": sid})
        elif t == "flushed":
            sid = str(msg["s"])
            if sid in self.series:
                self.series[sid].flushed[int(msg["w"])] = msg
        elif t == "bye":
            self.byes[int(msg["w"])] = msg
        elif t == "source_error":
            log.error("worker %s: source failed: %s", msg.get("w"), msg.get("error"))
        else:
            log.warning("collector: unknown message type %r ignored", t)

    def tick(self) -> list[SeriesSummary]:
        """Finalise the series that are over; publish the live status now and then."""
        now = self.clock()
        done = []
        for sid, agg in list(self.series.items()):
            if agg.end_time is None:
                continue
            if len(agg.flushed) >= self.n_workers or now - agg.end_time > self.end_timeout:
                if len(agg.flushed) < self.n_workers:
                    log.warning("series %s: %d of %d workers flushed within %.1f s; finishing anyway",
                                sid, len(agg.flushed), self.n_workers, self.end_timeout)
                done.append(self._finish(sid, complete=True))
            elif agg.flush_sent is not None and now - agg.flush_sent > 1.0:
                agg.flush_sent = now
                self._send(self.control, b"flush", {"s": sid})
        if self.publish is not None and now >= self._next_publish:
            self._next_publish = now + self.publish_interval
            self.publish(b"summary", self.status())
        return done

    def _finish(self, sid: str, *, complete: bool) -> SeriesSummary:
        agg = self.series.pop(sid)
        s = agg.summarise(complete=complete, rotation=self.rotation)
        self.finished[sid] = s
        if self.publish is not None:
            self.publish(b"series_end", s.scalars())
        return s

    def finish_all(self) -> list[SeriesSummary]:
        """Finalise every open series that has results, as it stands (``complete`` False without an end)."""
        return [self._finish(sid, complete=self.series[sid].end_time is not None)
                for sid in list(self.series) if self.series[sid].rows]

    def throughput(self, window: float = 2.0) -> float:
        """Results per second over the last ``window`` seconds."""
        now = self.clock()
        recent = [t for t in self._arrivals if now - t <= window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(now - recent[0], 1e-9)

    def status(self) -> dict[str, Any]:
        """Live numbers: current series, throughput, lag, counts."""
        cur = self.series.get(self._current) if self._current else None
        return {
            "elapsed": self.clock() - self.t_start,
            "n_results": self.n_results,
            "throughput": self.throughput(),
            "n_series_finished": len(self.finished),
            "workers_ready": len(self.ready),
            "series": cur.live() if cur is not None else None,
        }
