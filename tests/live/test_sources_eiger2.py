"""Stream V2: simulator → Eiger2Source over real ZeroMQ sockets, the tickit and DECTRIS CBOR files, fuzzing."""

from __future__ import annotations

import threading

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxcat.live.frames import Frame, SeriesEnd, SeriesInfo
from mxcat.live.simulate import serve, synthetic_series, v2_array
from mxcat.live.sources.eiger2 import Eiger2Decoder, Eiger2Source, typed_array_dtype

SHAPE = (100, 1050)


@pytest.mark.parametrize(
    ("encoding", "dtype"),
    [
        ("bs32-lz4<", "uint32"),
        ("bs16-lz4<", "uint16"),
        ("bs8-lz4<", "uint8"),
        ("lz4<", "uint16"),
        ("raw", "uint32"),
    ],
)
@pytest.mark.parametrize("defer", [False, True])
def test_round_trip_two_channels(tmp_path, encoding, dtype, defer):
    ep = f"ipc://{tmp_path}/v2.ipc"
    t = threading.Thread(
        target=serve,
        args=(ep,),
        kwargs=dict(
            protocol="eiger2",
            n_images=2,
            shape=SHAPE,
            encoding=encoding,
            dtype=dtype,
            seed=3,
            channels=("threshold_1", "threshold_2"),
            n_spots=5,
        ),
        daemon=True,
    )
    t.start()
    with Eiger2Source(ep, timeout=10, stop_after_end=True, defer_bslz4=defer) as src:
        items = list(src)
    t.join(10)
    info, *frames, end = items
    assert all((f.encoded is not None) == (defer and encoding.startswith("bs")) for f in frames)
    assert (
        isinstance(info, SeriesInfo)
        and isinstance(end, SeriesEnd)
        and info.channels == ("threshold_1", "threshold_2")
    )
    assert info.has_geometry and info.distance == 0.2 and info.pixel_mask.shape == SHAPE
    for c, name in enumerate(info.channels):
        got = [f for f in frames if f.channel == name]
        want = [a for a, _ in synthetic_series(2, seed=3, channel=c, shape=SHAPE, dtype=dtype, n_spots=5)]
        assert [f.index for f in got] == [1, 2]
        assert all(
            g.data.dtype == np.dtype(dtype) and np.array_equal(g.pixels(), w)
            for g, w in zip(got, want, strict=True)
        )
    assert (end.n_received, end.n_missing, end.n_malformed) == (2, 0, 0)


def test_tickit_start_image_end(corpus):
    d = corpus / "stream" / "dls-tickit_eiger2-si-16m_stream2"
    dec = Eiger2Decoder()
    items = [i for n in ("start", "image", "end") for i in dec.feed([(d / f"{n}.cbor").read_bytes()])]
    info, frame, end = items
    assert info.shape == (4362, 4148) and info.saturation_value == 21517 and info.omega_increment == 0.1
    assert info.detector == "Dectris EIGER2 Si 16M" and info.wavelength == pytest.approx(0.918381073013)
    assert info.pixel_mask is None  # stubbed to 4 bytes in the file
    assert (
        frame.channel == "threshold_1" and frame.data.dtype == np.uint16 and frame.data.shape == (4362, 4148)
    )
    assert int((frame.data == 0xFFFF).sum()) == 1_253_075
    assert end.n_received == 1 and dec.n_malformed == 0


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("bslz4_8bit", np.uint8),
        ("bslz4_16bit", np.uint16),
        ("bslz4_32bit", np.uint32),
        ("lz4_16bit", np.uint16),
        ("lz4_8bit", np.uint8),
    ],
)
def test_dectris_testdata(corpus, name, dtype):
    d = corpus / "stream" / "dectris-stream2-testdata" / f"r500k_bm_{name}"
    dec = Eiger2Decoder()
    items = dec.feed([(d / "000001.cbor").read_bytes()]) + dec.feed([(d / "000011.cbor").read_bytes()])
    frames = [i for i in items if isinstance(i, Frame)]
    assert sorted(f.channel for f in frames) == ["difference", "threshold_1", "threshold_2"]
    top = 28 if name == "bslz4_32bit" else 4
    for f in frames:
        assert f.data.shape == (514, 1030) and f.data.dtype == dtype and f.index == 1
        if f.channel != "difference":
            assert 0 <= int(f.data.min()) and int(f.data.max()) <= top
    assert isinstance(items[-1], SeriesEnd) and items[-1].n_received == 1


def test_typed_array_tags():
    assert (
        typed_array_dtype(69) == np.dtype("<u2")
        and typed_array_dtype(66) == np.dtype(">u4")
        and typed_array_dtype(85) == np.dtype("<f4")
    )
    assert typed_array_dtype(76) is None and typed_array_dtype(90) is None


def _msg(obj):
    return [cbor2.dumps(cbor2.CBORTag(55799, obj))]


def test_malformed_out_of_order_and_restart():
    dec = Eiger2Decoder()

    def img(i, sid="a"):
        return _msg(
            {
                "type": "image",
                "series_id": 1,
                "series_unique_id": sid,
                "image_id": i,
                "data": {"t": v2_array(np.full((4, 8), i, "uint16"), "bs16-lz4<")},
            }
        )

    out = dec.feed(
        _msg(
            {
                "type": "start",
                "series_unique_id": "a",
                "number_of_images": 4,
                "image_size_x": 8,
                "image_size_y": 4,
                "channels": ["t"],
            }
        )
    )
    out += dec.feed(img(2)) + dec.feed(img(0))
    out += (
        dec.feed([b"garbage"])
        + dec.feed([b"a", b"b"])
        + dec.feed(
            _msg(
                {
                    "type": "image",
                    "series_unique_id": "a",
                    "image_id": 1,
                    "data": {
                        "t": cbor2.CBORTag(
                            40, [[4, 8], cbor2.CBORTag(69, cbor2.CBORTag(56500, ["zstd", 2, b"x"]))]
                        )
                    },
                }
            )
        )
    )
    out += dec.feed(_msg({"type": "start", "series_unique_id": "b", "number_of_images": 1}))
    ends = [i for i in out if isinstance(i, SeriesEnd)]
    assert (
        ends[0].series_id,
        ends[0].n_received,
        ends[0].n_out_of_order,
        ends[0].n_malformed,
        ends[0].n_missing,
    ) == ("a", 2, 1, 3, 0)
    assert dec.malformed == {"cbor": 1, "part-count": 1, "decode": 1}


@settings(max_examples=300, deadline=None)
@given(
    buf=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda b: cbor2.dumps(
                {
                    "type": "image",
                    "series_id": 1,
                    "image_id": 0,
                    "data": {
                        "t": cbor2.CBORTag(
                            40, [[2, 2], cbor2.CBORTag(69, cbor2.CBORTag(56500, ["bslz4", 2, b]))]
                        )
                    },
                }
            ),
            st.binary(max_size=80),
        ),
    )
)
def test_fuzz_never_raises(buf):
    for dec in (Eiger2Decoder(), Eiger2Decoder(defer_bslz4=True)):
        dec.feed([buf])
        assert dec.n_messages == 1


def test_end_of_a_series_never_started_is_passed_on_once():
    dec = Eiger2Decoder()
    end = [cbor2.dumps({"type": "end", "series_id": 7, "series_unique_id": "u7"})]
    out = dec.feed(end)
    assert len(out) == 1 and isinstance(out[0], SeriesEnd) and out[0].series_id == "u7"
    assert dec.feed(end) == []
