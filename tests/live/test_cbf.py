"""CBF reader: corpus files (real Pilatus/Eiger miniCBF, full imgCIF, CBFlib 0.7.5 fit2d), the byte-offset
codec against its own encoder, and malformed input that must raise CbfError and nothing else."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxcat.live.sources.cbf import (
    CbfError,
    decode_byte_offset,
    decode_cbf,
    encode_byte_offset,
    read_cbf,
    write_cbf,
)

PILATUS_6M_GAPS = 2527 * 2463 - 60 * 487 * 195  # 526,101 inter-module pixels, stored as -1


@pytest.fixture(scope="module")
def det(corpus: Path) -> Path:
    return corpus / "detector"


def test_full_imgcif_pilatus6m(det: Path) -> None:
    a, h = read_cbf(det / "dls-i03_pilatus3-6m_fullcbf_smargon_0001.cbf.gz")
    assert a.shape == (2527, 2463) and a.dtype == np.int32
    assert int((a == -1).sum()) == PILATUS_6M_GAPS
    assert int((a == -2).sum()) == 1213
    assert a.max() == 336
    assert h["wavelength"] == 0.97625 and h["distance"] == 0.29147
    assert (h["beam_centre_x"], h["beam_centre_y"]) == (1229.30, 1200.48)
    assert h["pixel_size_x"] == 172e-6 and h["saturation_value"] == 91795
    assert h["omega_start"] == 45.0 and h["omega_increment"] == 0.1
    assert h["dimensions"] == (2463, 2527) and h["undefined_value"] == -1


def test_minicbf_pilatus_bz2(det: Path) -> None:
    a, h = read_cbf(det / "dls-i04_pilatus-6m_minicbf_gridscan_thau_3_2_0001.cbf.bz2")
    assert a.shape == (2527, 2463) and a.dtype == np.int32
    assert int((a == -1).sum()) == PILATUS_6M_GAPS
    assert a.max() == 114000
    assert h["count_time"] == 0.019 and h["saturation_value"] == 115897
    assert h["detector"].startswith("PILATUS3 6M")


def test_minicbf_from_eiger(det: Path) -> None:
    a, h = read_cbf(det / "dls-i04_eiger16m_minicbf-from-nxs_therm_0001.cbf.gz")
    assert a.shape == (4362, 4148) and a.dtype == np.int32
    assert a.max() == 404 and int((a == -2).sum()) == 2496
    assert h["pixel_size_x"] == 75e-6 and h["wavelength"] == 0.98027


def test_fit2d_dimensions_from_array_structure_list(det: Path) -> None:
    a, h = read_cbf(det / "imgcif_cbflib-0.7.5_fit2d_data.cbf")
    assert "x-binary-size-fastest-dimension" not in h["mime"]
    assert a.shape == (236, 263) and a.dtype == np.int32
    assert (a.min(), a.max()) == (0, 1115)
    assert a[-1, -1] == 45  # last little-endian int32 of the file, before the closing boundary
    assert h["wavelength"] == 1.7712
    assert "pixel_size_x" not in h  # the file says 0.0e-6: unknown, not zero


def test_cbf_without_binary_section(det: Path) -> None:
    with pytest.raises(CbfError, match="no binary section") as err:
        read_cbf(det / "imgcif_cbflib-0.9.3_lcls-cspad_fel_test1_data-removed.cbf")
    assert "fel_test1" in str(err.value)


def test_smv_is_not_cbf(det: Path) -> None:
    with pytest.raises(CbfError):
        read_cbf(det / "su_timepix512_smv_stdgoni_0001.img")


def test_truncated_file(det: Path, tmp_path: Path) -> None:
    raw = (det / "imgcif_cbflib-0.7.5_fit2d_data.cbf").read_bytes()
    p = tmp_path / "cut.cbf"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CbfError, match="truncated") as err:
        read_cbf(p)
    assert err.value.path == str(p)
    g = tmp_path / "cut.cbf.gz"
    g.write_bytes(gzip.compress(raw)[:1000])
    with pytest.raises(CbfError, match="decompress"):
        read_cbf(g)
    with pytest.raises(CbfError, match="cannot read"):
        read_cbf(tmp_path / "absent.cbf")


@pytest.mark.parametrize("seed", range(5))
def test_byte_offset_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(-50, 200, size=(97, 131)).astype(np.int32)
    # big jumps exercise the 2-, 4- and 8-byte escapes
    a.flat[rng.integers(0, a.size, 300)] = rng.integers(-(2**31), 2**31 - 1, 300)
    a.flat[rng.integers(0, a.size, 300)] = rng.integers(-30000, 30000, 300)
    a[0, :4] = [2**31 - 1, -(2**31), 2**31 - 1, -1]
    enc = encode_byte_offset(a)
    assert np.array_equal(decode_byte_offset(enc, a.size).reshape(a.shape), a)
    with pytest.raises(CbfError):
        decode_byte_offset(enc[:-1], a.size)


def test_byte_offset_escape_widths() -> None:
    assert encode_byte_offset(np.array([1, -126])) == bytes([1, 0x81])
    assert encode_byte_offset(np.array([127 + 1])) == bytes([0x80, 0x80, 0x00])
    assert encode_byte_offset(np.array([40000])) == bytes([0x80, 0x00, 0x80]) + (40000).to_bytes(4, "little")
    assert len(encode_byte_offset(np.array([0, 2**40]))) == 1 + 15


def test_write_read_minicbf(tmp_path: Path) -> None:
    a = np.random.default_rng(1).integers(-2, 70000, size=(40, 30)).astype(np.int32)
    h = {
        "pixel_size_x": 172e-6,
        "pixel_size_y": 172e-6,
        "distance": 0.25,
        "wavelength": 0.9795,
        "beam_centre_x": 15.5,
        "beam_centre_y": 20.25,
        "count_time": 0.1,
        "omega_start": 10.0,
        "omega_increment": 0.1,
        "saturation_value": 1_000_000,
    }
    for name in ("x_0001.cbf", "x_0002.cbf.gz", "x_0003.cbf.bz2"):
        write_cbf(tmp_path / name, a, h)
        b, hb = read_cbf(tmp_path / name)
        assert np.array_equal(a, b)
        assert {k: hb[k] for k in h} == h


_SAMPLE = None


def _sample() -> bytes:
    global _SAMPLE
    if _SAMPLE is None:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            write_cbf(
                Path(d) / "s.cbf",
                np.arange(-5, 7 * 9 - 5, dtype=np.int32).reshape(7, 9) * 1000,
                {"pixel_size_x": 1e-4, "wavelength": 1.0, "beam_centre_x": 3.0, "beam_centre_y": 4.0},
            )
            _SAMPLE = (Path(d) / "s.cbf").read_bytes()
    return _SAMPLE


def _check(raw: bytes) -> None:
    try:
        a, h = decode_cbf(raw)
    except CbfError:
        return
    assert isinstance(a, np.ndarray)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_bytes_raise_only_cbf_error(data: st.DataObject) -> None:
    raw = bytearray(_sample())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    _check(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))


_HEADER_LINES = [
    "X-Binary-Size: ",
    "X-Binary-Element-Type: ",
    "X-Binary-Size-Fastest-Dimension: ",
    "X-Binary-Size-Second-Dimension: ",
    "X-Binary-Number-of-Elements: ",
    "Content-Transfer-Encoding: ",
    "X-Binary-Element-Byte-Order: ",
    "     conversions=",
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_HEADER_LINES),
    st.one_of(
        st.integers(-(2**64), 2**64).map(str),
        st.text(max_size=30),
        st.sampled_from(
            [
                '"x-CBF_PACKED"',
                '"signed 64-bit real IEEE"',
                "BASE64",
                "BIG_ENDIAN",
                '"unsigned 16-bit integer"',
                "0",
                "99999999999",
            ]
        ),
    ),
)
def test_mutated_mime_headers_raise_only_cbf_error(line: str, value: str) -> None:
    raw = _sample()
    start = raw.index(line.encode())
    end = raw.index(b"\r\n", start)
    _check(raw[:start] + (line + value).encode("utf-8", "replace") + raw[end:])
