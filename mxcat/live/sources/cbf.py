"""CBF / imgCIF image reader, written from the imgCIF/CBF format description (Bernstein & Hammersley).

A CBF file is CIF text with one or more binary sections. Each section starts with
``--CIF-BINARY-FORMAT-SECTION--`` followed by MIME headers (``Content-Type`` with
``conversions="x-CBF_BYTE_OFFSET"``, ``Content-Transfer-Encoding``, ``X-Binary-Size``,
``X-Binary-Element-Type``, ``X-Binary-Size-Fastest-Dimension`` / ``-Second-Dimension``, …), a blank
line and the start marker ``0C 1A 04 D5``; the binary data follows the marker. Pilatus "miniCBF"
files carry the detector settings as ``# Key value`` lines in ``_array_data.header_contents``; full
imgCIF files describe the array in ``_array_structure_list`` (used when the MIME header lacks the
dimensions, as in files written by CBFlib 0.7.5). Files compressed with gzip or bzip2 are read
transparently (recognised by their magic bytes).

The byte-offset decompressor (numba) follows CBFlib's ``cbf_byte_offset``: each pixel is the previous
one plus a delta stored as a signed byte; ``0x80`` escapes to a 16-bit delta, ``0x8000`` to 32 bits
and ``0x80000000`` to 64 bits (all little-endian). :func:`encode_byte_offset` and :func:`write_cbf`
produce the same encoding, for tests and the simulator.

Public API: :func:`read_cbf` ``(path) -> (ndarray, header dict)``, :func:`decode_cbf` (bytes),
:func:`encode_byte_offset`, :func:`decode_byte_offset`, :func:`write_cbf`, :class:`CbfError`.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

__all__ = ["CbfError", "decode_byte_offset", "decode_cbf", "encode_byte_offset", "read_cbf", "write_cbf"]

BINARY_SECTION = b"--CIF-BINARY-FORMAT-SECTION--"
START_MARKER = b"\x0c\x1a\x04\xd5"

_ELEMENT_TYPES: dict[str, str] = {
    "signed 8-bit integer": "i1",
    "unsigned 8-bit integer": "u1",
    "signed 16-bit integer": "i2",
    "unsigned 16-bit integer": "u2",
    "signed 32-bit integer": "i4",
    "unsigned 32-bit integer": "u4",
    "signed 64-bit integer": "i8",
    "unsigned 64-bit integer": "u8",
    "signed 32-bit real ieee": "f4",
    "signed 64-bit real ieee": "f8",
}

# Pilatus header line -> (our key, regex of the value, scale to SI-ish units used in frames.py)
_PILATUS_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


class CbfError(ValueError):
    """A CBF file cannot be read: names the file and the reason."""

    def __init__(self, reason: str, *, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


# --------------------------------------------------------------------------- byte offset codec


@njit(cache=True, nogil=True)
def _bo_decode(buf: np.ndarray, out: np.ndarray) -> int:  # pragma: no cover - compiled
    """Decode into *out*; returns bytes consumed, or -1 when *buf* ends early."""
    n = out.size
    nb = buf.size
    pos = 0
    cur = np.int64(0)
    for i in range(n):
        if pos >= nb:
            return -1
        d = np.int64(buf[pos])
        pos += 1
        if d >= 128:
            d -= 256
        if d == -128:
            if pos + 2 > nb:
                return -1
            d = np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
            pos += 2
            if d >= 32768:
                d -= 65536
            if d == -32768:
                if pos + 4 > nb:
                    return -1
                d = (
                    np.int64(buf[pos])
                    | (np.int64(buf[pos + 1]) << 8)
                    | (np.int64(buf[pos + 2]) << 16)
                    | (np.int64(buf[pos + 3]) << 24)
                )
                pos += 4
                if d >= 2147483648:
                    d -= 4294967296
                if d == -2147483648:
                    if pos + 8 > nb:
                        return -1
                    u = np.uint64(0)
                    for k in range(8):
                        u |= np.uint64(buf[pos + k]) << np.uint64(8 * k)
                    pos += 8
                    d = np.int64(u)
        cur += d
        out[i] = cur
    return pos


@njit(cache=True, nogil=True)
def _bo_encode(values: np.ndarray, out: np.ndarray) -> int:  # pragma: no cover - compiled
    """Encode int64 *values* into *out* (at least 15 bytes per value); returns bytes written."""
    pos = 0
    prev = np.int64(0)
    for i in range(values.size):
        d = values[i] - prev
        prev = values[i]
        if -127 <= d <= 127:
            out[pos] = np.uint8(d & 0xFF)
            pos += 1
            continue
        out[pos] = 0x80
        pos += 1
        if -32767 <= d <= 32767:
            out[pos] = np.uint8(d & 0xFF)
            out[pos + 1] = np.uint8((d >> 8) & 0xFF)
            pos += 2
            continue
        out[pos] = 0x00
        out[pos + 1] = 0x80
        pos += 2
        if -2147483647 <= d <= 2147483647:
            for k in range(4):
                out[pos + k] = np.uint8((d >> (8 * k)) & 0xFF)
            pos += 4
            continue
        out[pos] = 0x00
        out[pos + 1] = 0x00
        out[pos + 2] = 0x00
        out[pos + 3] = 0x80
        pos += 4
        for k in range(8):
            out[pos + k] = np.uint8((d >> (8 * k)) & 0xFF)
        pos += 8
    return pos


def decode_byte_offset(data: bytes | np.ndarray, n: int, dtype: str | np.dtype = "i4") -> np.ndarray:
    """Decode *n* byte-offset compressed values into a 1-D array of *dtype*; CbfError when short."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    out = np.empty(n, dtype=np.int64)
    if _bo_decode(buf, out) < 0:
        raise CbfError(f"byte-offset data ends before {n} elements were decoded")
    return out.astype(dtype, copy=False)


def encode_byte_offset(values: np.ndarray) -> bytes:
    """Byte-offset compress an integer array (flattened in C order), as CBFlib writes it."""
    v = np.ascontiguousarray(values).reshape(-1).astype(np.int64)
    out = np.empty(v.size * 15 + 1, dtype=np.uint8)
    return out[: _bo_encode(v, out)].tobytes()


# --------------------------------------------------------------------------- text header


def _cif_tokens(text: str) -> list[str]:
    """Tokens of CIF text (quoted strings unquoted, ``;`` text fields as one token, comments dropped)."""
    tokens: list[str] = []
    lines = text.splitlines()
    i = 0
    token_re = re.compile(r"""'(?:[^']|'(?=\S))*'(?=\s|$)|"(?:[^"]|"(?=\S))*"(?=\s|$)|\S+""")
    while i < len(lines):
        line = lines[i]
        if line.startswith(";"):
            field = [line[1:]]
            i += 1
            while i < len(lines) and not lines[i].startswith(";"):
                field.append(lines[i])
                i += 1
            tokens.append("\n".join(field))
            i += 1
            continue
        for m in token_re.finditer(line):
            t = m.group(0)
            if t.startswith("#"):
                break
            if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
                t = t[1:-1]
            tokens.append(t)
        i += 1
    return tokens


def _cif_items(text: str) -> dict[str, list[str]]:
    """Every data name of a CIF block -> its values (one for a plain item, one per row in a loop)."""
    items: dict[str, list[str]] = {}
    toks = _cif_tokens(text)
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.lower() == "loop_":
            names = []
            i += 1
            while i < len(toks) and toks[i].startswith("_"):
                names.append(toks[i].lower())
                i += 1
            values = []
            while (
                i < len(toks)
                and not toks[i].startswith("_")
                and toks[i].lower() != "loop_"
                and not toks[i].lower().startswith("data_")
            ):
                values.append(toks[i])
                i += 1
            for k, name in enumerate(names):
                items[name] = values[k :: len(names)] if names else []
        elif t.startswith("_"):
            if i + 1 < len(toks) and not toks[i + 1].startswith("_"):
                items[t.lower()] = [toks[i + 1]]
                i += 2
            else:
                i += 1
        else:
            i += 1
    return items


def _number(s: str) -> float | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return v if np.isfinite(v) else None


def _pilatus(text: str, header: dict[str, Any]) -> None:
    """Read ``# Key value`` lines of a Pilatus (miniCBF) header into *header*."""
    n = _PILATUS_NUMBER
    lines = {}
    for raw in text.splitlines():
        s = raw.strip()
        if s.startswith("#"):
            body = s[1:].strip()
            key, _, rest = body.partition(" ")
            lines.setdefault(key.rstrip(":"), rest.strip())
    header["pilatus"] = lines

    def grab(key: str, pattern: str) -> re.Match[str] | None:
        return re.match(pattern, lines[key]) if key in lines else None

    if m := grab("Pixel_size", rf"{n}\s*m\s*x\s*{n}\s*m"):
        header["pixel_size_x"], header["pixel_size_y"] = float(m.group(1)), float(m.group(2))
    for key, name in (
        ("Detector_distance", "distance"),
        ("Exposure_time", "count_time"),
        ("Exposure_period", "frame_time"),
    ):
        if m := grab(key, n):
            header[name] = float(m.group(1))
    if m := grab("Wavelength", n):
        header["wavelength"] = float(m.group(1))
    if m := grab("Beam_xy", rf"\(\s*{n}\s*,\s*{n}\s*\)"):
        header["beam_centre_x"], header["beam_centre_y"] = float(m.group(1)), float(m.group(2))
    if m := grab("Start_angle", n):
        header["omega_start"] = float(m.group(1))
    if m := grab("Angle_increment", n):
        header["omega_increment"] = float(m.group(1))
    if m := grab("Count_cutoff", n):
        header["saturation_value"] = int(float(m.group(1)))
    if "Detector" in lines:
        header["detector"] = lines["Detector"]


def _imgcif(items: dict[str, list[str]], header: dict[str, Any]) -> None:
    """Geometry and array layout from full imgCIF categories (only what a frame source needs)."""
    dims = items.get("_array_structure_list.dimension", [])
    prec = items.get("_array_structure_list.precedence", [])
    if dims and len(dims) == len(prec):
        try:
            order = sorted(zip((int(p) for p in prec), (int(d) for d in dims), strict=True))
            header["dimensions"] = tuple(d for _, d in order)  # fastest first
        except ValueError:
            pass
    if "wavelength" not in header:
        wl = [w for w in (_number(v) for v in items.get("_diffrn_radiation_wavelength.wavelength", [])) if w]
        if wl:
            header["wavelength"] = wl[0]
    sizes = [_number(v) for v in items.get("_array_element_size.size", [])]
    if "pixel_size_x" not in header and len(sizes) >= 2 and all(sizes[:2]):
        header["pixel_size_x"], header["pixel_size_y"] = sizes[0], sizes[1]
    if "saturation_value" not in header:
        ov = [_number(v) for v in items.get("_array_intensities.overload", [])]
        if ov and ov[0]:
            header["saturation_value"] = int(ov[0])
    und = [_number(v) for v in items.get("_array_intensities.undefined_value", [])]
    if und and und[0] is not None:
        header["undefined_value"] = und[0]


# --------------------------------------------------------------------------- binary section


def _mime(block: bytes) -> dict[str, str]:
    """MIME headers (lower-case names) of a binary section; continuation lines are folded."""
    text = block.decode("latin-1")
    out: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t" and last is not None:
            out[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            last = name.strip().lower()
            out[last] = value.strip()
    return out


def _int_field(mime: dict[str, str], name: str) -> int | None:
    v = mime.get(name.lower())
    if v is None:
        return None
    try:
        return int(v.strip().strip('"'))
    except ValueError as err:
        raise CbfError(f"MIME header {name} is not an integer: {v!r}") from err


def decode_cbf(raw: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode the first image of CBF bytes (already decompressed); raises CbfError without a path."""
    if raw[:2] == b"\x1f\x8b" or raw[:3] == b"BZh":
        raw = _decompress(raw)
    start = raw.find(BINARY_SECTION)
    if start < 0:
        raise CbfError("no binary section (--CIF-BINARY-FORMAT-SECTION--): not a CBF image")
    marker = raw.find(START_MARKER, start)
    if marker < 0:
        raise CbfError("binary section without the 0C 1A 04 D5 start marker")
    text = raw[:start].decode("latin-1")
    header: dict[str, Any] = {}
    if not text.lstrip().startswith("###CBF") and "data_" not in text:
        raise CbfError("text before the binary section is not CIF")
    _pilatus(text, header)
    _imgcif(_cif_items(text), header)
    mime = _mime(raw[start + len(BINARY_SECTION) : marker])
    header["mime"] = mime

    content_type = mime.get("content-type", "")
    m = re.search(r"conversions\s*=\s*\"?([^\";\s]+)", content_type, re.IGNORECASE)
    conversion = (m.group(1) if m else "x-CBF_NONE").lower()
    encoding = mime.get("content-transfer-encoding", "BINARY").strip().upper()
    etype = mime.get("x-binary-element-type", '"signed 32-bit integer"').strip().strip('"').lower()
    if etype not in _ELEMENT_TYPES:
        raise CbfError(f"unsupported X-Binary-Element-Type {etype!r}")
    order = mime.get("x-binary-element-byte-order", "LITTLE_ENDIAN").strip().upper()
    if order not in ("LITTLE_ENDIAN", "BIG_ENDIAN"):
        raise CbfError(f"unknown X-Binary-Element-Byte-Order {order!r}")
    dtype = np.dtype(_ELEMENT_TYPES[etype]).newbyteorder("<" if order == "LITTLE_ENDIAN" else ">")
    size = _int_field(mime, "X-Binary-Size")
    if size is None or size < 0:
        raise CbfError("missing or negative X-Binary-Size")
    body = raw[marker + 4 :]
    if encoding == "BINARY":
        if size > len(body):
            raise CbfError(
                f"file truncated: X-Binary-Size {size} but {len(body)} bytes follow the start marker"
            )
        payload = body[:size]
    elif encoding == "BASE64":
        end = body.find(b"--CIF-BINARY-FORMAT-SECTION")
        try:
            payload = base64.b64decode(body[: end if end >= 0 else len(body)])
        except (ValueError, TypeError) as err:
            raise CbfError(f"bad BASE64 binary section: {err}") from err
        payload = payload[:size]
    else:
        raise CbfError(f"unsupported Content-Transfer-Encoding {encoding!r}")
    md5 = mime.get("content-md5")
    if md5 and encoding == "BINARY":
        digest = base64.b64encode(hashlib.md5(payload).digest()).decode()
        if digest != md5.strip():
            raise CbfError("Content-MD5 does not match the binary data (corrupt or truncated file)")

    fast = _int_field(mime, "X-Binary-Size-Fastest-Dimension")
    second = _int_field(mime, "X-Binary-Size-Second-Dimension")
    third = _int_field(mime, "X-Binary-Size-Third-Dimension")
    nelem = _int_field(mime, "X-Binary-Number-of-Elements")
    if fast is None and header.get("dimensions"):
        dims = header["dimensions"]
        fast, second = dims[0], (dims[1] if len(dims) > 1 else 1)
        third = dims[2] if len(dims) > 2 else None
    if conversion == "x-cbf_none" or conversion == "none":
        if size % dtype.itemsize:
            raise CbfError(f"X-Binary-Size {size} is not a multiple of the element size {dtype.itemsize}")
        n_avail = size // dtype.itemsize
        nelem = n_avail if nelem is None else nelem
        if nelem > n_avail:
            raise CbfError(f"{nelem} elements declared but only {n_avail} present")
        flat = np.frombuffer(payload, dtype=dtype, count=nelem)
    elif conversion == "x-cbf_byte_offset":
        if dtype.kind not in "iu":
            raise CbfError(f"byte-offset compression of {etype} is not defined")
        if nelem is None:
            if fast is None:
                raise CbfError("byte-offset data without X-Binary-Number-of-Elements or dimensions")
            nelem = fast * (second or 1) * (third or 1)
        if nelem < 0 or nelem > len(payload):
            raise CbfError(f"{nelem} elements cannot fit in {len(payload)} compressed bytes")
        flat = decode_byte_offset(payload, nelem, dtype.newbyteorder("="))
    else:
        raise CbfError(
            f"unsupported compression {conversion!r} (this reader knows x-CBF_BYTE_OFFSET and none)"
        )

    if fast is None:
        shape: tuple[int, ...] = (nelem,)
    else:
        shape = tuple(d for d in (third, second or 1, fast) if d is not None)
        if any(d <= 0 for d in shape) or int(np.prod(shape)) != nelem:
            raise CbfError(f"dimensions {shape} do not match {nelem} elements")
    header["shape"] = shape
    header["dtype"] = flat.dtype.newbyteorder("=").str
    data = flat.reshape(shape)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("="))
    return data, header


def _decompress(raw: bytes) -> bytes:
    try:
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return bz2.decompress(raw)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise CbfError(f"cannot decompress: {err}") from err


def read_cbf(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a CBF image (plain, .gz or .bz2): the 2-D pixel array (slow, fast) and a header dict.

    Header keys (present when the file says so): ``pixel_size_x/y`` (m), ``distance`` (m),
    ``wavelength`` (Å), ``beam_centre_x/y`` (pixels), ``count_time``, ``frame_time`` (s),
    ``omega_start``, ``omega_increment`` (deg), ``saturation_value``, ``detector``,
    ``undefined_value``, ``shape``, ``dtype``, ``pilatus`` (every ``# Key value`` line) and ``mime``.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise CbfError(f"cannot read: {err.strerror or err}", path=path) from err
    try:
        return decode_cbf(raw)
    except CbfError as err:
        raise CbfError(err.reason, path=path) from err
    except (MemoryError, UnicodeError, OverflowError, ValueError, IndexError, TypeError) as err:
        raise CbfError(f"malformed file ({type(err).__name__}: {err})", path=path) from err


def write_cbf(path: str | Path, data: np.ndarray, header: dict[str, Any] | None = None) -> None:
    """Write a Pilatus-style miniCBF (byte-offset, signed 32-bit) with the given header values.

    *header* keys as :func:`read_cbf` returns them (pixel_size_x/y, distance, wavelength,
    beam_centre_x/y, count_time, omega_start, omega_increment, saturation_value).
    """
    h = header or {}
    a = np.asarray(data)
    if a.ndim != 2:
        raise CbfError("write_cbf writes 2-D arrays only", path=path)
    lines = ["# Detector: mxcat synthetic"]
    if "pixel_size_x" in h:
        lines.append(f"# Pixel_size {h['pixel_size_x']:g} m x {h.get('pixel_size_y', h['pixel_size_x']):g} m")
    for key, name, unit in (
        ("count_time", "Exposure_time", "s"),
        ("wavelength", "Wavelength", "A"),
        ("distance", "Detector_distance", "m"),
    ):
        if key in h:
            lines.append(f"# {name} {h[key]:.7g} {unit}")
    if "saturation_value" in h:
        lines.append(f"# Count_cutoff {int(h['saturation_value'])} counts")
    if "beam_centre_x" in h:
        lines.append(f"# Beam_xy ({h['beam_centre_x']:.2f}, {h['beam_centre_y']:.2f}) pixels")
    for key, name in (("omega_start", "Start_angle"), ("omega_increment", "Angle_increment")):
        if key in h:
            lines.append(f"# {name} {h[key]:.4f} deg.")
    payload = encode_byte_offset(a.astype(np.int64))
    md5 = base64.b64encode(hashlib.md5(payload).digest()).decode()
    text = (
        '###CBF: VERSION 1.5, mxcat\r\n\r\ndata_image\r\n\r\n_array_data.header_convention "PILATUS_1.2"\r\n'
        "_array_data.header_contents\r\n;\r\n" + "\r\n".join(lines) + "\r\n;\r\n\r\n_array_data.data\r\n;\r\n"
        "--CIF-BINARY-FORMAT-SECTION--\r\nContent-Type: application/octet-stream;\r\n"
        '     conversions="x-CBF_BYTE_OFFSET"\r\nContent-Transfer-Encoding: BINARY\r\n'
        f"X-Binary-Size: {len(payload)}\r\nX-Binary-ID: 1\r\n"
        'X-Binary-Element-Type: "signed 32-bit integer"\r\nX-Binary-Element-Byte-Order: LITTLE_ENDIAN\r\n'
        f"Content-MD5: {md5}\r\nX-Binary-Number-of-Elements: {a.size}\r\n"
        f"X-Binary-Size-Fastest-Dimension: {a.shape[1]}\r\nX-Binary-Size-Second-Dimension: {a.shape[0]}\r\n"
        "X-Binary-Size-Padding: 4095\r\n\r\n"
    )
    tail = b"\x00" * 4095 + b"\r\n--CIF-BINARY-FORMAT-SECTION----\r\n;\r\n\r\n"
    raw = text.encode("latin-1") + START_MARKER + payload + tail
    p = Path(path)
    if p.suffix == ".gz":
        raw = gzip.compress(raw, compresslevel=1)
    elif p.suffix == ".bz2":
        raw = bz2.compress(raw, compresslevel=1)
    p.write_bytes(raw)
