"""Ingest adapters: one module per artefact that MX programs write, registered as entry points.

An adapter has a ``name``, a one-line ``description``, a cheap ``detect(head, name) -> bool`` that
looks at the first bytes of a file (decompressed when gzip/bz2) and its file name and never raises,
and a pure ``parse(path) -> Parsed`` that either returns observations named by mmCAT keys (or by
mapped names with their vocabulary and row) or raises :class:`mxcat.errors.ParseError` with the
adapter, file, line and reason: never a traceback, a hang, or a half-filled result.

The registry (entry point group ``mxcat.adapters``) explains itself: :func:`explain` lists every
adapter's verdict on a file and any exception a detector swallowed. Exactly one adapter must claim
a file; two claims are a bug that :func:`claim` reports rather than resolves by guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mxcat.adapters._util import read_head
from mxcat.errors import ParseError
from mxcat.records import Observation


@dataclass
class Result:
    """One result inside a file: a processing result, collection parameters, or live-analysis rows.

    ``level`` is the subject the values describe first (``processing`` results become a processing
    subject under the dataset; ``dataset`` values attach to the dataset itself). Keys that describe
    a higher level (a wavelength inside a processing log) are routed to it at ingest.
    """

    level: str = "processing"
    label: str | None = None
    """Tells apart several results of one file (``isotropic``, ``staraniso``, ``dataset 2``...)."""
    values: list[Observation] = field(default_factory=list)
    tables: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    def add(self, key: str, value: Any, unit: str | None = None, *, scheme: str | None = None, selector: str | None = None) -> Result:
        """Add a value; ``None`` values (absent in the file) are skipped."""
        if value is not None:
            self.values.append(Observation(key, value, unit, None, scheme, selector))
        return self

    def table(self, category: str, rows: list[dict[str, Any]]) -> Result:
        if rows:
            self.tables.append((category, rows))
        return self


@dataclass
class Parsed:
    """What an adapter read from one file."""

    adapter: str
    path: Path
    program: str | None = None
    version: str | None = None
    results: list[Result] = field(default_factory=list)
    hints: dict[str, str] = field(default_factory=dict)
    """Subject hints found in the file: ``dataset``, ``sample``, ``beamline``, ``facility``..."""
    notes: list[str] = field(default_factory=list)
    """How ambiguous things were decided (for example whether Rmerge was a percentage)."""
    dropped: list[tuple[str, Any, str]] = field(default_factory=list)
    """(key, value, reason) of values found in the file but left out because mmCAT forbids them."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter,
            "path": str(self.path),
            "program": self.program,
            "version": self.version,
            "hints": self.hints,
            "notes": self.notes,
            "dropped": [{"key": k, "value": v, "reason": r} for k, v, r in self.dropped],
            "results": [
                {
                    "level": r.level,
                    "label": r.label,
                    "values": [{"key": o.key, "value": o.value, "unit": o.unit, "scheme": o.scheme, "selector": o.selector} for o in r.values],
                    "tables": [{"category": c, "rows": rows} for c, rows in r.tables],
                }
                for r in self.results
            ],
        }


@runtime_checkable
class Adapter(Protocol):
    """The protocol every adapter implements (see the module docstring)."""

    name: str
    description: str

    def detect(self, head: bytes, name: str) -> bool: ...

    def parse(self, path: Path) -> Parsed: ...


BROKEN: dict[str, str] = {}
"""Entry points that failed to load, with the error (shown by ``mxcat adapters list``)."""


def registry() -> dict[str, Adapter]:
    """Every registered adapter by name (entry point group ``mxcat.adapters``).

    An entry point that fails to load is left out and reported in :data:`BROKEN`, so one broken
    plugin does not stop the others.
    """
    out: dict[str, Adapter] = {}
    for ep in entry_points(group="mxcat.adapters"):
        try:
            obj = ep.load()
        except Exception as err:  # noqa: BLE001 - a broken plugin is reported, not fatal
            BROKEN[ep.name] = f"{type(err).__name__}: {err}"
            continue
        out[ep.name] = obj() if isinstance(obj, type) else obj
    return out


@dataclass(frozen=True, slots=True)
class Verdict:
    adapter: str
    claims: bool
    error: str | None = None


def explain(path: Path, adapters: dict[str, Adapter] | None = None) -> list[Verdict]:
    """Every adapter's verdict on *path*, with any exception its detector raised (a detector bug)."""
    adapters = adapters if adapters is not None else registry()
    head = read_head(path)
    out = []
    for name, a in sorted(adapters.items()):
        try:
            out.append(Verdict(name, bool(a.detect(head, path.name))))
        except Exception as err:  # noqa: BLE001 - explain shows what a detector swallowed or raised
            out.append(Verdict(name, False, f"{type(err).__name__}: {err}"))
    return out


def claim(path: Path, adapters: dict[str, Adapter] | None = None) -> Adapter | None:
    """The one adapter that claims *path*, None when none does; two claims raise ParseError."""
    adapters = adapters if adapters is not None else registry()
    verdicts = [v for v in explain(path, adapters) if v.claims]
    if len(verdicts) > 1:
        raise ParseError(f"claimed by several adapters ({', '.join(v.adapter for v in verdicts)}); use --adapter", path=path)
    return adapters[verdicts[0].adapter] if verdicts else None


def expand(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files from paths, directories (recursively, sorted) and glob patterns."""
    import glob

    for p in paths:
        s = str(p)
        matches = sorted(glob.glob(s, recursive=True)) if any(c in s for c in "*?[") else [s]
        if not matches:
            raise ParseError("no file matches the pattern", path=s)
        for m in matches:
            mp = Path(m)
            if mp.is_dir():
                yield from sorted(f for f in mp.rglob("*") if f.is_file())
            elif mp.is_file():
                yield mp
            else:
                raise ParseError("no such file or directory", path=mp)
