"""Stream V1: simulator → Eiger1Source over real ZeroMQ sockets, the dranspose dump, malformed input."""

from __future__ import annotations

import json
import socket
import threading

import cbor2
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from mxcat.live.frames import Frame, SeriesEnd, SeriesInfo
from mxcat.live.simulate import Geometry, serve, synthetic_series, v1_image
from mxcat.live.sources.eiger1 import Eiger1Decoder, Eiger1Source

SHAPE = (120, 1100)  # crosses one module gap along fast


def _run(endpoint, src_cls, defer_bslz4=False, **serve_kw):
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(serve(endpoint, **serve_kw)), daemon=True)
    t.start()
    with src_cls(endpoint, timeout=10, stop_after_end=True, defer_bslz4=defer_bslz4) as src:
        items = list(src)
    t.join(10)
    return items, result


@pytest.fixture()
def endpoint(tmp_path):
    return f"ipc://{tmp_path}/eiger.ipc"


@pytest.mark.parametrize(
    ("encoding", "dtype"),
    [
        ("bs32-lz4<", "uint32"),
        ("bs16-lz4<", "uint16"),
        ("bs8-lz4<", "uint8"),
        ("lz4<", "uint32"),
        ("lz4<", "uint16"),
        ("raw", "uint16"),
        ("raw", "uint32"),
    ],
)
@pytest.mark.parametrize("defer", [False, True])
def test_round_trip_bit_exact(endpoint, encoding, dtype, defer):
    items, result = _run(
        endpoint,
        Eiger1Source,
        defer_bslz4=defer,
        protocol="eiger1",
        n_images=3,
        shape=SHAPE,
        encoding=encoding,
        dtype=dtype,
        seed=7,
        header_detail="all",
        n_spots=5,
    )
    info, *frames, end = items
    assert isinstance(info, SeriesInfo) and isinstance(end, SeriesEnd)
    assert info.shape == SHAPE and info.n_images == 3 and info.has_geometry and info.pixel_mask is not None
    assert int(info.pixel_mask.sum()) == int((np.arange(1100) % 1040 >= 1030).sum()) * 120
    expected = [f for f, _ in synthetic_series(3, seed=7, shape=SHAPE, dtype=dtype, n_spots=5)]
    assert [f.index for f in frames] == [1, 2, 3]
    for got, want in zip(frames, expected, strict=True):
        assert (got.encoded is not None) == (defer and encoding.startswith("bs"))  # left encoded when asked
        assert got.data.dtype == np.dtype(dtype) and got.data.shape == SHAPE
        assert np.array_equal(got.pixels(), want) and got.encoded is None and np.array_equal(got.data, want)
    assert (end.n_received, end.n_missing, end.n_malformed, end.n_out_of_order) == (3, 0, 0, 0)
    assert len(result["spots"][0]) == 3 and len(result["spots"][0][0]) == 5


def test_tcp_header_values_and_rate():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    items, result = _run(
        f"tcp://127.0.0.1:{port}",
        Eiger1Source,
        n_images=4,
        shape=SHAPE,
        rate=100,
        geometry=Geometry(distance=0.3, wavelength=1.0, beam_centre=(550.0, 60.0)),
    )
    info = items[0]
    assert (info.distance, info.wavelength, info.beam_centre_x, info.beam_centre_y, info.pixel_size_x) == (
        0.3,
        1.0,
        550.0,
        60.0,
        75e-6,
    )
    assert info.saturation_value == 2**32 - 2 and info.bit_depth == 32 and info.omega_increment == 0.1
    assert result["seconds"] >= 0.03 and items[-1].n_received == 4


def test_dranspose_dump_header(corpus):
    dec = Eiger1Decoder()
    items = []
    with open(corpus / "stream" / "maxiv-dranspose_eiger2-cdte-9m_stream1_truncated.cbors", "rb") as f:
        reader = cbor2.CBORDecoder(f)
        while True:
            try:
                msg = reader.decode()
            except cbor2.CBORDecodeEOF:
                break
            items += dec.feed(msg)
    info, end = items
    assert info.series_id == "6" and info.detector == "Dectris EIGER2 CdTe 9M"
    assert info.shape == (3262, 3108) and info.dtype == "uint32" and info.n_images == 3
    assert (
        info.saturation_value == 83270
        and info.pixel_size_x == 7.5e-05
        and info.count_time == pytest.approx(0.0099999)
    )
    assert (
        info.wavelength == pytest.approx(1.5419, abs=1e-4) and info.distance is None
    )  # 0.0 in the header: unknown
    assert info.extra["config"]["detector_number"] == "E-18-0132" and "collect_dict" in info.extra["appendix"]
    assert set(info.extra["table_errors"]) == {"dflatfield-1.0", "dpixelmask-1.0"}  # truncated in the dump
    assert (end.n_received, end.n_malformed, end.n_missing) == (0, 3, 0)
    assert dec.malformed == {"decode": 3}


def _header(series=1, n=4, shape=(8, 16)):
    cfg = {
        "nimages": n,
        "ntrigger": 1,
        "x_pixels_in_detector": shape[1],
        "y_pixels_in_detector": shape[0],
        "bit_depth_image": 16,
    }
    return [
        json.dumps({"htype": "dheader-1.0", "header_detail": "basic", "series": series}).encode(),
        json.dumps(cfg).encode(),
    ]


def _img(series, i, enc="bs16-lz4<"):
    return v1_image(series, i, np.full((8, 16), i, "uint16"), enc)


def test_malformed_counted_and_skipped_over_socket(endpoint):
    msgs = [_header(), _img(1, 0)]
    bad = _img(1, 1)
    msgs.append(bad[:2] + [bad[2][:-7]] + bad[3:])  # truncated blob
    msgs.append(_img(1, 1)[:3])  # wrong part count
    msgs.append([b"{not json", b"x"])  # garbage JSON
    unk = _img(1, 1)
    unk[1] = unk[1].replace(b"bs16-lz4<", b"zstd<")
    msgs.append(unk)  # unknown encoding
    msgs += [_img(1, 3), _img(1, 1), [json.dumps({"htype": "dseries_end-1.0", "series": 1}).encode()]]
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind(endpoint)
    try:
        with Eiger1Source(endpoint, ctx=ctx, timeout=5, stop_after_end=True) as src:
            for m in msgs:
                push.send_multipart(m)
            items = list(src)
    finally:
        push.close(linger=0)
        ctx.term()
    frames = [i for i in items if isinstance(i, Frame)]
    assert [f.index for f in frames] == [1, 4, 2] and all(int(f.data[0, 0]) == f.index - 1 for f in frames)
    end = items[-1]
    assert (end.n_received, end.n_malformed, end.n_out_of_order, end.n_missing) == (3, 4, 1, 0)


def test_missing_duplicate_restart_and_stale():
    dec = Eiger1Decoder()
    out = (
        dec.feed(_header(series=1, n=5)) + dec.feed(_img(1, 0)) + dec.feed(_img(1, 2)) + dec.feed(_img(1, 2))
    )
    out += dec.feed(_header(series=2, n=2))  # restart without an end
    out += dec.feed(_img(1, 3))  # stale frame of the old series
    out += dec.feed(_img(2, 0)) + dec.feed(_img(2, 1)) + dec.feed([b'{"htype":"dseries_end-1.0","series":2}'])
    kinds = [type(i).__name__ for i in out]
    assert kinds == ["SeriesInfo", "Frame", "Frame", "SeriesEnd", "SeriesInfo", "Frame", "Frame", "SeriesEnd"]
    assert (out[3].series_id, out[3].n_received, out[3].n_missing) == ("1", 2, 3)
    assert (out[-1].series_id, out[-1].n_received, out[-1].n_missing) == ("2", 2, 0)
    assert dec.n_stale == 1


def test_frames_without_header_start_an_implicit_series():
    dec = Eiger1Decoder()
    out = dec.feed(_img(9, 0)) + dec.feed(_img(9, 1)) + dec.end_of_stream()
    assert isinstance(out[0], SeriesInfo) and out[0].extra["header_missing"] and out[0].shape == (8, 16)
    assert out[-1].n_received == 2


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from(
                [
                    b'{"htype":"dimage-1.0","series":1,"frame":0}',
                    b'{"htype":"dheader-1.0","header_detail":"all","series":1}',
                    b'{"htype":"dimage_d-1.0","shape":[16,8],"type":"uint16","encoding":"bs16-lz4<"}',
                    b'{"htype":"dseries_end-1.0"}',
                    b"{}",
                    b"[]",
                ]
            ),
        ),
        max_size=9,
    )
)
def test_fuzz_never_raises(parts):
    for dec in (Eiger1Decoder(), Eiger1Decoder(defer_bslz4=True)):
        dec.feed(_header())
        dec.feed(parts)
        dec.feed(_img(1, 0))
        assert dec.n_messages == 3


def test_end_of_a_series_never_started_is_passed_on_once():
    dec = Eiger1Decoder()
    end = [b'{"htype":"dseries_end-1.0","series":7}']
    out = dec.feed(end)
    assert len(out) == 1 and isinstance(out[0], SeriesEnd) and out[0].series_id == "7"
    assert dec.feed(end) == []
