"""``embedded``: the default catalogue, one SQLite file of subjects, records, tables and provenance.

Upserts are keyed by envelope id, so a batch stored twice is stored once; records are clustered by
their identity (subject, key, run: the parts the record id is made of), which keeps a subject's
records together on disk and the inserts cheap. Records keep their
value in one ``value`` column with SQLite's own storage classes (INTEGER, REAL, TEXT; numbers
sort before text), indexed with the key for the filter language of :mod:`mxcat.query`; subjects
are indexed by their hierarchy fields.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mxcat.errors import ConfigError, SinkRejected, SinkUnavailable
from mxcat.outbox import _retry_locked, _wal
from mxcat.records import LEVELS, Subject
from mxcat.sinks import Envelope, Health, Receipt

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS subjects (
    subject_id TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    path       TEXT NOT NULL,
    parent_id  TEXT,
    {", ".join(f'"{lv}" TEXT' for lv in LEVELS)},
    inputs     TEXT
);
CREATE INDEX IF NOT EXISTS subjects_beamline ON subjects(beamline, kind);
CREATE INDEX IF NOT EXISTS subjects_proposal ON subjects(proposal, session);
CREATE INDEX IF NOT EXISTS subjects_parent ON subjects(parent_id);
CREATE TABLE IF NOT EXISTS provenance (
    provenance_id TEXT PRIMARY KEY,
    run TEXT NOT NULL, program TEXT, version TEXT, adapter TEXT, source TEXT, sha256 TEXT, created TEXT
);
CREATE TABLE IF NOT EXISTS records (
    subject_id    TEXT NOT NULL,
    key           TEXT NOT NULL,
    run           TEXT NOT NULL,
    record_id     TEXT NOT NULL,
    category      TEXT NOT NULL,
    value         ANY,
    unit          TEXT,
    provenance_id TEXT NOT NULL,
    stored        REAL NOT NULL,
    PRIMARY KEY (subject_id, key, run)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_key_value ON records(key, value);
CREATE TABLE IF NOT EXISTS tables (
    table_id      TEXT PRIMARY KEY,
    subject_id    TEXT NOT NULL,
    category      TEXT NOT NULL,
    columns       TEXT NOT NULL,
    rows          TEXT NOT NULL,
    n_rows        INTEGER NOT NULL,
    provenance_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tables_subject ON tables(subject_id, category);
"""


def subject_rows(d: dict[str, Any], known: set[str] | frozenset[str] = frozenset()) -> list[tuple[Any, ...]]:
    """Rows for a subject and its ancestors (up to the first *known* one), so the hierarchy can be browsed."""
    rows = []
    s: Subject | None = Subject.from_dict(d)
    while s is not None and s.id not in known:
        parent = s.parent
        rows.append((s.id, s.kind, s.path, parent.id if parent else None, *[getattr(s, lv) for lv in LEVELS],
                     json.dumps(list(s.inputs)) if s.inputs else None))
        s = parent
    return rows


class EmbeddedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "NORMAL"


class EmbeddedSink:
    """The embedded SQLite catalogue."""

    Options = EmbeddedOptions

    def __init__(self, name: str = "embedded", path: str | Path = "catalogue.sqlite", synchronous: str = "NORMAL") -> None:
        self.name = name
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            _retry_locked(lambda: _wal(self.db), 30.0)
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute("PRAGMA wal_autocheckpoint=8000")  # fewer, larger checkpoints: fewer fsyncs
            self.db.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache for the indexes
            _retry_locked(lambda: self.db.executescript(SCHEMA), 30.0)
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"cannot open the embedded catalogue: {err}", key=f"sinks.{name}.path", path=self.path) from err
        self._known: set[str] = set()
        """Subject ids known to be stored, so their rows are not rebuilt for every batch."""

    def put(self, envelopes: Sequence[Envelope]) -> Receipt:
        subjects: dict[str, tuple[Any, ...]] = {}
        prov: dict[str, tuple[Any, ...]] = {}
        recs: list[tuple[Any, ...]] = []
        tabs: list[tuple[Any, ...]] = []
        receipt = Receipt()
        now = time.time()
        for env in envelopes:
            try:
                sid = env["subject_id"]
                if sid not in subjects and sid not in self._known:
                    for row in subject_rows(env["subject"], self._known):
                        subjects.setdefault(row[0], row)
                pid = env["provenance_id"]
                if pid not in prov:
                    p = env["provenance"]
                    prov[pid] = (pid, p.get("run"), p.get("program"), p.get("version"), p.get("adapter"), p.get("source"),
                                 p.get("sha256"), p.get("created"))
                if env["type"] == "record":
                    v = env["value"]
                    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                        raise TypeError(f"value of type {type(v).__name__}")
                    recs.append((sid, env["key"], env["provenance"]["run"], env["id"], env["key"].split(".", 1)[0], v, env.get("unit"), pid, now))
                elif env["type"] == "table":
                    tabs.append((env["id"], sid, env["category"], json.dumps(env["columns"]), json.dumps(env["rows"]),
                                 len(env["rows"]), pid))
                else:
                    receipt.rejected[env["id"]] = f"unknown envelope type {env['type']!r}"
                    continue
                receipt.stored.append(env["id"])
            except (KeyError, TypeError, ValueError) as err:
                receipt.rejected[env.get("id", "?")] = f"malformed envelope: {err}"
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(f"INSERT OR IGNORE INTO subjects VALUES ({','.join('?' * (5 + len(LEVELS)))})", subjects.values())
            self.db.executemany("INSERT OR IGNORE INTO provenance VALUES (?,?,?,?,?,?,?,?)", prov.values())
            self.db.executemany(
                "INSERT INTO records(subject_id, key, run, record_id, category, value, unit, provenance_id, stored) "
                "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(subject_id, key, run) DO UPDATE SET value=excluded.value, unit=excluded.unit, "
                "provenance_id=excluded.provenance_id, stored=excluded.stored",
                recs,
            )
            self.db.executemany(
                "INSERT INTO tables VALUES (?,?,?,?,?,?,?) ON CONFLICT(table_id) DO UPDATE SET columns=excluded.columns, "
                "rows=excluded.rows, n_rows=excluded.n_rows, provenance_id=excluded.provenance_id",
                tabs,
            )
            self.db.execute("COMMIT")
            if len(self._known) > 200_000:
                self._known.clear()
            self._known.update(subjects)
        except sqlite3.OperationalError as err:
            self._rollback()
            raise SinkUnavailable(f"embedded catalogue busy or unwritable: {err}", sink=self.name) from err
        except sqlite3.DatabaseError as err:
            self._rollback()
            raise SinkRejected(f"embedded catalogue refused the batch: {err}", sink=self.name) from err
        return receipt

    def _rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def health(self) -> Health:
        try:
            (n,) = self.db.execute("SELECT COUNT(*) FROM records").fetchone()
        except sqlite3.Error as err:
            return Health(False, str(err))
        return Health(True, f"{n} records in {self.path}")

    def close(self) -> None:
        self.db.close()

    # -- reading (used by mxcat.client) -----------------------------------------------------------

    def query(self, node: Any, filters: dict[str, str] | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        from mxcat.query import to_sql

        where, args = to_sql(node) if node is not None else ("1", [])
        for lv, value in (filters or {}).items():
            if lv not in (*LEVELS, "kind"):
                raise ValueError(f"unknown subject level {lv!r}")
            where += f' AND s."{lv}" = ?'
            args.append(value)
        rows = self.db.execute(f"SELECT subject_id, kind, path FROM subjects s WHERE {where} ORDER BY path LIMIT ?", [*args, limit])
        return [{"subject_id": r[0], "kind": r[1], "path": r[2]} for r in rows]

    def find_subjects(self, ref: str) -> list[tuple[str, str, str]]:
        """Subjects whose id starts with *ref* or whose path equals *ref*."""
        return list(self.db.execute("SELECT subject_id, kind, path FROM subjects WHERE subject_id LIKE ? OR path = ? LIMIT 20",
                                    (ref.replace("%", "") + "%", ref)))

    def subject_records(self, subject_id: str) -> list[dict[str, Any]]:
        q = ("SELECT r.key, r.value, r.unit, p.run, p.program, p.version, p.adapter, p.source, "
             "p.created FROM records r JOIN provenance p ON p.provenance_id = r.provenance_id WHERE r.subject_id = ? "
             "ORDER BY r.key, r.stored")
        out = []
        for key, value, unit, run, program, version, adapter, source, created in self.db.execute(q, (subject_id,)):
            out.append({"key": key, "value": value, "unit": unit, "run": run, "program": program, "version": version,
                        "adapter": adapter, "source": source, "created": created})
        return out

    def subject_tables(self, subject_id: str) -> list[dict[str, Any]]:
        q = "SELECT category, columns, n_rows, rows FROM tables WHERE subject_id = ? ORDER BY category"
        return [{"category": c, "columns": json.loads(cols), "n_rows": n, "rows": json.loads(rows)}
                for c, cols, n, rows in self.db.execute(q, (subject_id,))]

    def children(self, subject_id: str) -> list[tuple[str, str, str]]:
        return list(self.db.execute("SELECT subject_id, kind, path FROM subjects WHERE parent_id = ? ORDER BY path", (subject_id,)))

    def count(self) -> dict[str, int]:
        return {t: int(self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in ("subjects", "records", "tables")}
