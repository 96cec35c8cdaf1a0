"""Small helpers shared by the adapters: reading heads and text, numbers, and parse errors with lines."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mxcat.errors import ParseError

if TYPE_CHECKING:
    from mxcat.adapters import Parsed

HEAD_BYTES = 8192
MAX_TEXT_BYTES = 512 * 1024 * 1024


def _opener(path: Path):  # noqa: ANN202 - returns a binary file object
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic == b"BZh":
        return bz2.open(path, "rb")
    return open(path, "rb")


def read_head(path: Path, n: int = HEAD_BYTES) -> bytes:
    """The first *n* bytes of a file, decompressed when it is gzip or bzip2; b'' when unreadable."""
    try:
        with _opener(path) as f:
            return f.read(n)
    except (OSError, EOFError, ValueError):
        return b""


def read_bytes(path: Path, adapter: str) -> bytes:
    """The whole file (decompressed), or ParseError."""
    try:
        with _opener(path) as f:
            data = f.read(MAX_TEXT_BYTES + 1)
    except (OSError, EOFError, ValueError) as err:
        raise ParseError(f"cannot read: {err}", adapter=adapter, path=path) from err
    if len(data) > MAX_TEXT_BYTES:
        raise ParseError(f"larger than {MAX_TEXT_BYTES} bytes", adapter=adapter, path=path)
    return data


def read_text(path: Path, adapter: str) -> str:
    """The file as text (UTF-8, undecodable bytes replaced), or ParseError."""
    return read_bytes(path, adapter).decode("utf-8", errors="replace")


def read_lines(path: Path, adapter: str) -> tuple[str, list[str]]:
    """The file's text and its lines; ParseError when the last line is cut off (a truncated file)."""
    text = read_text(path, adapter)
    lines = text.splitlines()
    if text and not text.endswith(("\n", "\r")):
        fail(adapter, path, "the file ends in the middle of a line: truncated", len(lines))
    return text, lines


def read_json(path: Path, adapter: str) -> Any:
    """The file as a JSON document (UTF-8), or ParseError naming the line of a syntax error."""
    try:
        return json.loads(read_bytes(path, adapter).decode("utf-8", errors="strict"))
    except UnicodeDecodeError as err:
        raise ParseError(f"not UTF-8 text: {err}", adapter=adapter, path=path) from err
    except json.JSONDecodeError as err:
        raise ParseError(f"not valid JSON: {err.msg}", adapter=adapter, path=path, line=err.lineno) from err
    except RecursionError as err:
        raise ParseError("JSON nested too deeply", adapter=adapter, path=path) from err


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_NUM = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def number(text: str | None) -> float | None:
    """A float from text such as ' 1.62 ', '.122' or '1e3'; None for empty, '-', 'nan' or junk."""
    if text is None:
        return None
    t = text.strip()
    if not t or not _NUM.match(t):
        return None
    return float(t)


def integer(text: str | None) -> int | None:
    v = number(text)
    return int(v) if v is not None and float(v).is_integer() else None


def fail(adapter: str, path: Path, reason: str, line: int | None = None) -> NoReturn:
    raise ParseError(reason, adapter=adapter, path=path, line=line)


def line_of(text: str, offset: int) -> int:
    """1-based line number of a character offset."""
    return text.count("\n", 0, offset) + 1


def keep_valid(parsed: Parsed) -> Parsed:
    """Leave out values and table cells that break their mmCAT definition, each recorded in ``parsed.dropped``.

    A file can hold numbers its definition forbids: a damaged file (a CC1/2 of 9.995), or a real
    value outside a PDBx hard range (a weak outer shell's CC1/2 of -0.02). Such values are dropped
    one by one with the reason and the rest of the file is kept; ``mxcat ingest`` records every
    drop with the outbox's rejections and reports it, like a value rejected at ingest.
    """
    from mxcat.errors import ValidationError
    from mxcat.ontology import load

    onto = load()
    for res in parsed.results:
        where = f"result {res.label}: " if res.label else ""
        kept = []
        for o in res.values:
            try:
                if o.scheme is None and o.selector is None:
                    onto.validate(o.key, o.value, o.unit)
            except ValidationError as err:
                parsed.dropped.append((o.key, o.value, f"{where}{err.reason}"))
                parsed.notes.append(f"{where}dropped {o.key} = {o.value!r}: {err.reason}")
                continue
            kept.append(o)
        res.values = kept
        tables = []
        for cat, rows in res.tables:
            clean_rows = []
            for i, row in enumerate(rows):
                clean = {}
                for col, v in row.items():
                    val, unit = (v.get("value"), v.get("unit")) if isinstance(v, dict) else (v, None)
                    if val is not None:
                        try:
                            onto.validate(f"{cat}.{col}", val, unit)
                        except ValidationError as err:
                            parsed.dropped.append((f"{cat}.{col}", val, f"{where}row {i + 1}: {err.reason}"))
                            parsed.notes.append(f"{where}dropped {cat}.{col} of row {i + 1} = {val!r}: {err.reason}")
                            continue
                    clean[col] = v
                clean_rows.append(clean)
            tables.append((cat, clean_rows))
        res.tables = tables
    return parsed
