"""The live runner end to end: real worker processes, a simulated Eiger over TCP, the collector.

Synthetic series: 40 frames of 256 × 512 (uint16, bs16-lz4), every fourth frame blank, the others
60 seeded Gaussian spots (mxcat.live.simulate.synthetic_frame), Eiger-like geometry at 0.1 m.
"""

from __future__ import annotations

import socket
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from mxcat.live.collector import Collector
from mxcat.live.frames import Frame, SeriesInfo
from mxcat.live.records import series_batch
from mxcat.live.runner import DropOldestQueue, run
from mxcat.live.simulate import Geometry, serve, synthetic_frame

pytestmark = pytest.mark.usefixtures("warm_kernels")

N_FRAMES = 40
SHAPE = (256, 512)


def _endpoint() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def series():
    frames, truth = [], []
    for i in range(N_FRAMES):
        f, spots = synthetic_frame(shape=SHAPE, dtype="<u2", seed=(7, i), n_spots=0 if i % 4 == 3 else 60, gaps=False)
        frames.append(f)
        truth.append(len(spots))
    return frames, truth


class Detector:
    """serve() in a thread, started when the runner says its workers are ready."""

    def __init__(self, frames, *, rate=None, protocol="eiger1"):
        self.endpoint = _endpoint()
        self.result: dict = {}
        self.error: BaseException | None = None
        self.ctx = zmq.Context()

        def go():
            try:
                self.result.update(serve(self.endpoint, frames=frames, protocol=protocol, rate=rate, ctx=self.ctx,
                                         geometry=Geometry(distance=0.1), encoding="bs16-lz4<", send_timeout=10.0))
            except BaseException as err:  # reported by the test
                self.error = err

        self.thread = threading.Thread(target=go, daemon=True)

    def start(self):
        self.thread.start()

    def close(self):
        if self.thread.is_alive() or self.thread.ident is not None:
            self.thread.join(timeout=15)
        self.ctx.term()


def _run(frames, *, workers, rate=None, **kw):
    det = Detector(frames, rate=rate)
    try:
        summary = run(det.endpoint, protocol="eiger1", workers=workers, max_series=1, timeout=25, ready=det.start, **kw)
    finally:
        det.close()
    assert det.error is None, det.error
    return summary


@pytest.mark.parametrize(("workers", "defer"), [(1, False), (2, False), (2, True)])
def test_every_frame_once_and_statistics(series, workers, defer):
    frames, truth = series
    s = _run(frames, workers=workers, rate=200.0, queue_size=64, source_options={"defer_bslz4": defer})
    assert all(c == 0 for c in s.worker_exitcodes)
    assert len(s.series) == 1
    ss = s.series[0]
    assert ss.complete and ss.series_id == "1"
    images = [r["image_number"] for r in ss.rows]
    assert images == list(range(1, N_FRAMES + 1))  # all, each once, numbered from 1
    assert ss.n_duplicates == 0 and ss.n_dropped == 0 and ss.n_missing == 0 and ss.n_errors == 0
    assert ss.n_received == N_FRAMES == ss.n_expected
    true_hits = sum(1 for t in truth if t >= 30)
    assert ss.n_hits == true_hits and ss.hit_rate == pytest.approx(100.0 * true_hits / N_FRAMES)
    for r, t in zip(ss.rows, truth, strict=True):
        assert abs(r["n_spots_total"] - t) <= max(3, 0.1 * t)
    if workers == 2:
        assert len(ss.workers) == 2 and all(n > 0 for n in ss.workers.values())  # the stream was shared
    assert ss.radial_sums is not None and ss.radial_axis == "dstar2"
    assert ss.separation_counts is not None and ss.separation_counts.sum() > 0
    assert ss.resolution_estimate is not None and 3.0 < ss.resolution_estimate < 20.0
    assert ss.frame_rate and ss.frame_rate > 0 and ss.lag is not None


def test_records_and_feed(series, tmp_path, monkeypatch):
    monkeypatch.setenv("MXCAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MXCAT_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    from mxcat.client import Catalogue
    from mxcat.records import Subject

    frames, _ = series
    feed = _endpoint()
    got: list[tuple[bytes, dict]] = []
    stop = threading.Event()
    sctx = zmq.Context()
    sub = sctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(feed)

    def listen():
        while not stop.is_set():
            if sub.poll(50):
                topic, body = sub.recv_multipart()
                got.append((topic, msgpack.unpackb(body, raw=False)))

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    subject = {"facility": "ESRF", "beamline": "ID30A-1", "proposal": "mx2532", "session": "20261121", "dataset": "live1"}
    try:
        with Catalogue.open() as cat:
            s = _run(frames, workers=2, rate=400.0, queue_size=64, feed=feed, catalogue=cat, subject=subject)
            assert len(s.receipts) == 1
            rec = s.receipts[0]
            assert not rec.rejected, rec.rejected
            assert rec.tables == 3
            ds = Subject(**subject)
            view = cat.show(ds)
            keys = {r["key"]: r["value"] for rs in view.records.values() for r in rs}
            assert keys["mmcat_live_summary.n_frames"] == N_FRAMES
            assert keys["mmcat_live_summary.hit_rate"] == pytest.approx(75.0)
            proc = cat.show(ds.child(processing="live_1"))
            pkeys = {r["key"]: r["value"] for rs in proc.records.values() for r in rs}
            assert pkeys["pdbx_serial_crystallography_data_reduction.frame_hits"] == 30
            assert pkeys["pdbx_serial_crystallography_data_reduction.frames_total"] == N_FRAMES
            cats = {t["category"] for t in view.tables}
            assert {"mmcat_live_image", "mmcat_live_radial_profile", "mmcat_live_spot_separation"} <= cats
            found = cat.query("mmcat_live_summary.hit_rate > 50")
            assert found
    finally:
        time.sleep(0.1)
        stop.set()
        th.join(timeout=2)
        sub.close(linger=0)
        sctx.term()
    topics = {t for t, _ in got}
    assert b"frame" in topics and b"series_end" in topics
    assert sum(1 for t, _ in got if t == b"frame") >= N_FRAMES // 2  # PUB may miss the first ones
    end = [m for t, m in got if t == b"series_end"][0]
    assert end["n_frames"] == N_FRAMES


def test_overload_drops_oldest_and_counts(series):
    frames, _ = series
    s = _run(frames, workers=1, queue_size=4, slow=0.05)
    ss = s.series[0]
    assert ss.n_dropped > 0
    assert ss.n_frames + ss.n_dropped == N_FRAMES  # nothing lost silently
    assert len({r["image_number"] for r in ss.rows}) == ss.n_frames
    # drop-oldest: the last frames of the burst survive
    assert ss.rows[-1]["image_number"] == N_FRAMES


def test_drop_oldest_queue_bounded():
    q = DropOldestQueue(3)
    q.put(SeriesInfo("s", "synthetic"))
    for i in range(10):
        q.put(Frame("s", i, np.zeros(1)))
    assert len(q) == 3 and q.high_water == 3 and q.n_dropped == {"s": 7}
    assert isinstance(q.get(0.01), SeriesInfo)  # headers are never dropped
    assert [q.get(0.01).index for _ in range(3)] == [7, 8, 9]
    assert q.get(0.01) is None


def _result(i: int, n_spots: int, d_min: float | None) -> dict:
    return {"t": "frame", "w": 0, "s": "rot", "i": i, "received": None,
            "stats": {"n_spots_total": n_spots, "n_spots_no_ice": n_spots, "hit": n_spots >= 30, "estimated_d_min": d_min,
                      "saturated_fraction": 0.0, "background": 1.0, "ice_ring_score": 0.0, "multi_lattice_score": 0.0},
            "rp_sums": np.ones(4).tobytes(), "rp_n": np.ones(4, np.int64).tobytes(), "sep": np.zeros(5, np.int64).tobytes(),
            "rp_edges": np.linspace(0.0, 0.1, 5).tobytes(), "rp_axis": "dstar2"}


def _collect(spots, d_mins, *, omega_increment=0.1):
    c = Collector(n_workers=1)
    c.handle({"t": "series", "w": 0, "info": {"series_id": "rot", "protocol": "synthetic", "n_images": len(spots),
                                              "omega_increment": omega_increment}})
    for i, (n, d) in enumerate(zip(spots, d_mins, strict=True)):
        c.handle(_result(i + 1, n, d))
    c.handle({"t": "end", "w": 0, "s": "rot", "end": {}})
    c.handle({"t": "flushed", "w": 0, "s": "rot", "n_received": len(spots), "n_dropped": 0})
    (s,) = c.tick()
    return s


def test_decay_warning_on_falling_spot_count():
    rng = np.random.default_rng(1)
    spots = [int(200 - 3 * i + rng.normal(0, 5)) for i in range(50)]
    s = _collect(spots, [2.0] * 50)
    assert s.decay is not None and s.decay.spot_warning and s.decay.warning
    assert s.decay.spot_slope_percent < -50
    b = series_batch(s)
    assert ("mmcat_live_summary.decay_warning", "yes") in [(o.key, o.value) for o in b.observations]


def test_decay_warning_on_worsening_resolution():
    rng = np.random.default_rng(2)
    s = _collect([150] * 40, [2.0 + 0.03 * i + rng.normal(0, 0.02) for i in range(40)])
    assert s.decay.resolution_warning and not s.decay.spot_warning
    assert s.decay.resolution_slope == pytest.approx(3.0, rel=0.2)


def test_no_decay_warning_when_flat_or_not_rotation():
    rng = np.random.default_rng(3)
    spots = [int(150 + rng.normal(0, 10)) for _ in range(50)]
    d = [2.0 + rng.normal(0, 0.05) for _ in range(50)]
    s = _collect(spots, d)
    assert s.decay is not None and not s.decay.warning
    serial = _collect([int(200 - 3 * i) for i in range(50)], [2.0] * 50, omega_increment=0.0)
    assert serial.decay is None and not serial.rotation


def test_series_batch_validates():
    from mxcat.ingest import prepare
    from mxcat.ontology import load

    s = _collect([100 if i % 2 else 0 for i in range(20)], [2.5 if i % 2 else None for i in range(20)])
    prepared = prepare(series_batch(s, {"facility": "ESRF", "beamline": "ID23-1"}), load())
    assert not prepared.rejected, prepared.rejected
    keys = {r.key for r in prepared.records}
    assert "pdbx_serial_crystallography_data_reduction.frames_total" in keys
    assert "mmcat_live_summary.hit_rate" in keys
    assert {t.category for t in prepared.tables} == {"mmcat_live_image", "mmcat_live_radial_profile",
                                                      "mmcat_live_spot_separation"}
    empty = _collect([0] * 12, [None] * 12)
    keys = {o.key for o in series_batch(empty).observations}
    assert "pdbx_serial_crystallography_data_reduction.frame_hits" not in keys  # PDBx wants > 0


def test_cli_live_runs(series):
    import typer
    from typer.testing import CliRunner

    from mxcat.cli.live import live

    app = typer.Typer()
    app.command()(live)
    frames, _ = series
    det = Detector(frames[:12], rate=200.0)
    det.start()  # the detector binds first and waits for a peer
    try:
        res = CliRunner().invoke(app, ["--source", det.endpoint, "--workers", "1", "--max-series", "1",
                                       "--timeout", "20"])
    finally:
        det.close()
    assert res.exit_code == 0, res.output
    assert "series 1" in res.output and "12 frames" in res.output


def test_workers_keep_the_constants_of_the_last_few_series_only():
    from mxcat.live.runner import KEEP_SERIES, keep_recent

    cache: dict = {}
    for i in range(10):
        assert keep_recent(cache, f"s{i}", i) == i
    assert list(cache) == [f"s{i}" for i in range(10 - KEEP_SERIES, 10)]
    keep_recent(cache, "s7", 70)  # rebuilt: becomes the newest
    assert list(cache)[-1] == "s7" and len(cache) == KEEP_SERIES
