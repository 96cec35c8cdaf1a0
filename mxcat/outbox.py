"""The durable outbox: a local SQLite spool between ingest and the catalogue sinks.

Every envelope (record or table) is committed here, in WAL mode with ``synchronous=FULL`` by
default, before ``ingest`` returns. Delivery states commit with ``synchronous=NORMAL``: after a power
failure a state change may be lost, which only means an envelope is delivered again. Each envelope has one delivery row per sink with the state
machine ``PENDING → SENDING → DONE``, or ``DEAD`` with the sink's reason; transient failures go
back to ``PENDING`` with a ``next_at`` time (exponential backoff with jitter, computed by the
deliverer). ``SENDING`` rows carry a lease: a process killed while delivering leaves rows whose
lease expires, and they become ``PENDING`` again; the sinks' idempotent upserts make the second
delivery harmless, so every record is delivered exactly once in effect.

Ordering per subject is kept: a batch never contains an envelope of a subject that has an earlier
envelope still waiting (backing off) or in flight for the same sink.

The same envelope id ingested again with the same content changes nothing; with new content
(an update of the same record) the payload is replaced and its deliveries start over.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxcat.errors import ConfigError
from mxcat.records import dumps

PENDING, SENDING, DONE, DEAD = "PENDING", "SENDING", "DONE", "DEAD"
STATES = (PENDING, SENDING, DONE, DEAD)

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    subject_id    TEXT NOT NULL,
    provenance_id TEXT NOT NULL,
    kind          TEXT NOT NULL,
    key           TEXT,
    value         ANY,
    unit          TEXT,
    body          TEXT,
    digest        TEXT NOT NULL,
    created       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    sink        TEXT NOT NULL,
    seq         INTEGER NOT NULL REFERENCES entries(seq) ON DELETE CASCADE,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    error       TEXT,
    updated     REAL NOT NULL,
    PRIMARY KEY (sink, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries(sink, state, seq);
CREATE TABLE IF NOT EXISTS rejections (
    n       INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    subject TEXT,
    key     TEXT NOT NULL,
    value   TEXT,
    reason  TEXT NOT NULL,
    source  TEXT
);
CREATE TABLE IF NOT EXISTS subjects (subject_id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS provenance (provenance_id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""
SCHEMA_VERSION = "2"


@dataclass(frozen=True, slots=True)
class PutResult:
    new: int
    changed: int
    unchanged: int


@dataclass(frozen=True, slots=True)
class Claimed:
    seq: int
    id: str
    attempts: int
    envelope: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StateCount:
    sink: str
    state: str
    count: int
    oldest: float | None
    next_at: float | None


def _wal(db: sqlite3.Connection) -> None:
    """Switch to WAL unless already there (the mode is stored in the file; switching needs a lock)."""
    if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        db.execute("PRAGMA journal_mode=WAL")


def _retry_locked(fn: Any, timeout: float) -> Any:
    """Run *fn*, retrying while another process holds the lock SQLite needs for it.

    Changing the journal mode and creating the schema can fail at once with "database is locked"
    when several processes open the same file together, without waiting for the busy timeout.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _digest(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class Outbox:
    """One connection to the outbox file. Use one instance per thread or process."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", busy_timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}", key="outbox.synchronous")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"cannot open the outbox: {err}", key="outbox.path", path=self.path) from err
        _retry_locked(lambda: _wal(self.db), busy_timeout)
        # Only put() needs the configured durability; delivery states may be lost on power failure
        # (they fall back to PENDING and the idempotent sinks absorb the repeat), so they commit
        # without waiting for the disk.
        self._put_sync = synchronous.upper()
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA wal_autocheckpoint=8000")  # fewer, larger checkpoints: fewer fsyncs
        self.db.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache
        self.db.execute("PRAGMA foreign_keys=ON")
        _retry_locked(lambda: self.db.executescript(SCHEMA), busy_timeout)
        _retry_locked(lambda: self.db.execute("INSERT OR IGNORE INTO meta(k, v) VALUES ('schema', ?)", (SCHEMA_VERSION,)), busy_timeout)
        self._cache: dict[str, dict[str, dict[str, Any]]] = {}

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (the connection is in autocommit mode, so say BEGIN explicitly)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------------

    def put(self, envelopes: Sequence[Mapping[str, Any]], sinks: Sequence[str]) -> PutResult:
        """Store envelopes durably and queue them for *sinks*, in one transaction.

        Subjects and provenance are stored once each and joined back when envelopes are claimed;
        an envelope counts as changed when its own content, subject or provenance id changes (the
        provenance's creation time does not count: the same input ingested again changes nothing).
        """
        now = time.time()
        rows = []
        subjects: dict[str, str] = {}
        provenance: dict[str, str] = {}
        for env in envelopes:
            sid, pid = env["subject_id"], env["provenance_id"]
            if sid not in subjects:
                subjects[sid] = dumps(env["subject"])
            if pid not in provenance:
                provenance[pid] = dumps(env["provenance"])
            if env["type"] == "record":
                key, value, unit, body = env["key"], env["value"], env.get("unit"), None
                digest = _digest(f"{key}\x1f{value!r}\x1f{unit}\x1f{sid}\x1f{pid}")
            else:
                key = value = unit = None
                body = dumps({k: v for k, v in env.items() if k not in ("subject", "provenance", "id", "type", "subject_id", "provenance_id")})
                digest = _digest(f"{body}\x1f{sid}\x1f{pid}")
            rows.append((env["id"], sid, pid, env["type"], key, value, unit, body, digest, now))
        new = changed = 0
        db = self.db
        db.execute(f"PRAGMA synchronous={self._put_sync}")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO subjects(subject_id, body) VALUES (?, ?)", subjects.items())
            db.executemany("INSERT OR REPLACE INTO provenance(provenance_id, body) VALUES (?, ?)", provenance.items())
            existing: dict[str, tuple[int, str]] = {}
            ids = [r[0] for r in rows]
            for i in range(0, len(ids), 900):
                chunk = ids[i:i + 900]
                q = f"SELECT id, seq, digest FROM entries WHERE id IN ({','.join('?' * len(chunk))})"
                existing.update({r[0]: (r[1], r[2]) for r in db.execute(q, chunk)})
            fresh = [r for r in rows if r[0] not in existing]
            stale = [r for r in rows if r[0] in existing and existing[r[0]][1] != r[8]]
            seqs: list[int] = []
            if fresh:
                # the write lock is held: number the new envelopes here instead of reading them back
                (top,) = db.execute("SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name='entries'), 0), "
                                    "COALESCE((SELECT MAX(seq) FROM entries), 0))").fetchone()
                seqs = list(range(top + 1, top + 1 + len(fresh)))
                db.executemany("INSERT INTO entries(seq, id, subject_id, provenance_id, kind, key, value, unit, body, digest, created) "
                               "VALUES (?,?,?,?,?,?,?,?,?,?,?)", [(q, *r) for q, r in zip(seqs, fresh, strict=True)])
                new = len(fresh)
                for sink in sinks:
                    db.executemany("INSERT INTO deliveries(sink, seq, state, attempts, next_at, lease_until, error, updated) "
                                   "VALUES (?, ?, 'PENDING', 0, 0, 0, NULL, ?)", [(sink, q, now) for q in seqs])
            if stale:
                db.executemany("UPDATE entries SET subject_id=?, provenance_id=?, key=?, value=?, unit=?, body=?, digest=? WHERE id=?",
                               [(r[1], r[2], r[4], r[5], r[6], r[7], r[8], r[0]) for r in stale])
                changed = len(stale)
                for sink in sinks:
                    db.executemany(
                        "INSERT INTO deliveries(sink, seq, state, attempts, next_at, lease_until, error, updated) "
                        "VALUES (?, ?, 'PENDING', 0, 0, 0, NULL, ?) "
                        "ON CONFLICT(sink, seq) DO UPDATE SET state='PENDING', attempts=0, next_at=0, lease_until=0, error=NULL, "
                        "updated=excluded.updated",
                        [(sink, existing[r[0]][0], now) for r in stale],
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.execute("PRAGMA synchronous=NORMAL")
        return PutResult(new, changed, len(rows) - new - changed)

    def record_rejections(self, rejections: Iterable[Any]) -> int:
        rows = [(time.time(), getattr(r, "subject", None), r.key, _short(r.value), r.reason, getattr(r, "source", None)) for r in rejections]
        if rows:
            with self._tx():
                self.db.executemany("INSERT INTO rejections(at, subject, key, value, reason, source) VALUES (?,?,?,?,?,?)", rows)
        return len(rows)

    # -- delivering -------------------------------------------------------------------------------

    def recover(self, sink: str | None = None, now: float | None = None) -> int:
        """Return SENDING rows whose lease has expired (their process died) to PENDING."""
        now = time.time() if now is None else now
        q = "UPDATE deliveries SET state='PENDING', lease_until=0, updated=? WHERE state='SENDING' AND lease_until < ?"
        args: list[Any] = [now, now]
        if sink is not None:
            q += " AND sink=?"
            args.append(sink)
        with self._tx():
            return self.db.execute(q, args).rowcount

    def claim(self, sink: str, limit: int, lease: float = 60.0, now: float | None = None) -> list[Claimed]:
        """Take up to *limit* deliverable envelopes for *sink*, oldest first, keeping subject order."""
        now = time.time() if now is None else now
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            # one index range per state (a single IN () query would walk every DONE row in seq order)
            q = ("SELECT d.seq, e.subject_id, d.state, d.next_at, d.lease_until, e.id, d.attempts, e.provenance_id, e.kind, "
                 "e.key, e.value, e.unit, e.body "
                 "FROM deliveries d INDEXED BY deliveries_open JOIN entries e ON e.seq = d.seq "
                 "WHERE d.sink = ? AND d.state = ? ORDER BY d.seq LIMIT ?")
            pending = db.execute(q, (sink, PENDING, limit + 256)).fetchall()
            sending = db.execute(q, (sink, SENDING, 100_000)).fetchall()
            rows = sorted(pending + sending) if sending else pending
            blocked: set[str] = set()
            chosen: list[tuple[Any, ...]] = []
            for row in rows:
                seq, subject, state, next_at, lease_until = row[:5]
                if subject in blocked:
                    continue
                if (state == SENDING and lease_until >= now) or (state == PENDING and next_at > now):
                    blocked.add(subject)
                    continue
                chosen.append(row)
                if len(chosen) >= limit:
                    break
            if chosen:
                self._set_many(
                    "UPDATE deliveries SET state='SENDING', attempts=attempts+1, lease_until=?, updated=? WHERE sink=? AND seq IN ({})",
                    [now + lease, now, sink], [r[0] for r in chosen],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        subjects = self._bodies("subjects", "subject_id", {r[1] for r in chosen})
        provenance = self._bodies("provenance", "provenance_id", {r[7] for r in chosen})
        out = []
        for seq, sid, _state, _n, _l, eid, attempts, pid, kind, key, value, unit, body in chosen:
            env: dict[str, Any] = {"type": kind, "id": eid, "subject_id": sid, "provenance_id": pid,
                                   "subject": subjects[sid], "provenance": provenance[pid]}
            if kind == "record":
                env["key"], env["value"], env["unit"] = key, value, unit
            else:
                env.update(json.loads(body))
            out.append(Claimed(seq, eid, attempts + 1, env))
        return out

    def _bodies(self, table: str, column: str, keys: set[str]) -> dict[str, dict[str, Any]]:
        """Subject or provenance bodies by id, from a small cache or one query per 900 ids."""
        cache = self._cache.setdefault(table, {})
        missing = [k for k in keys if k not in cache]
        if len(cache) + len(missing) > 50_000:
            cache.clear()
            missing = list(keys)
        for i in range(0, len(missing), 900):
            chunk = missing[i:i + 900]
            q = f"SELECT {column}, body FROM {table} WHERE {column} IN ({','.join('?' * len(chunk))})"
            for k, body in self.db.execute(q, chunk):
                cache[k] = json.loads(body)
        return {k: cache.get(k, {}) for k in keys}

    def _set_many(self, sql: str, args: list[Any], seqs: list[int]) -> None:
        """Run an ``... seq IN ({})`` statement over *seqs*, 900 at a time (one statement beats one per row)."""
        for i in range(0, len(seqs), 900):
            chunk = seqs[i:i + 900]
            self.db.execute(sql.format(",".join("?" * len(chunk))), [*args, *chunk])

    def done(self, sink: str, seqs: Iterable[int]) -> None:
        now = time.time()
        with self._tx():
            self._set_many("UPDATE deliveries SET state='DONE', lease_until=0, error=NULL, updated=? WHERE sink=? AND seq IN ({})",
                           [now, sink], list(seqs))

    def dead(self, sink: str, reasons: Mapping[int, str]) -> None:
        now = time.time()
        with self._tx():
            self.db.executemany("UPDATE deliveries SET state='DEAD', lease_until=0, error=?, updated=? WHERE sink=? AND seq=?",
                                [(reason[:2000], now, sink, s) for s, reason in reasons.items()])

    def retry_later(self, sink: str, seqs: Iterable[int], next_at: float, error: str) -> None:
        now = time.time()
        with self._tx():
            self.db.executemany(
                "UPDATE deliveries SET state='PENDING', next_at=?, lease_until=0, error=?, updated=? WHERE sink=? AND seq=?",
                [(next_at, error[:2000], now, sink, s) for s in seqs],
            )

    # -- administration ---------------------------------------------------------------------------

    def status(self) -> list[StateCount]:
        q = ("SELECT d.sink, d.state, COUNT(*), MIN(e.created), MIN(d.next_at) FROM deliveries d JOIN entries e ON e.seq = d.seq "
             "GROUP BY d.sink, d.state ORDER BY d.sink, d.state")
        return [StateCount(*r) for r in self.db.execute(q)]

    def pending(self, sink: str) -> int:
        (n,) = self.db.execute("SELECT COUNT(*) FROM deliveries WHERE sink=? AND state IN ('PENDING','SENDING')", (sink,)).fetchone()
        return int(n)

    def dead_letters(self, sink: str | None = None, limit: int = 50) -> list[tuple[str, str, str, str]]:
        q = ("SELECT d.sink, e.id, COALESCE(e.key, e.body), d.error FROM deliveries d JOIN entries e ON e.seq = d.seq WHERE d.state='DEAD'"
             + (" AND d.sink=?" if sink else "") + " ORDER BY d.seq LIMIT ?")
        return list(self.db.execute(q, ([sink] if sink else []) + [limit]))

    def rejections(self, limit: int = 50) -> list[tuple[float, str, str, str, str, str]]:
        return list(self.db.execute("SELECT at, subject, key, value, reason, source FROM rejections ORDER BY n DESC LIMIT ?", (limit,)))

    def retry(self, sink: str | None = None, *, dead: bool = False) -> int:
        """Make waiting envelopes deliverable now; with ``dead``, also bring DEAD ones back."""
        states = ("PENDING", "DEAD") if dead else ("PENDING",)
        q = f"UPDATE deliveries SET state='PENDING', next_at=0, updated=? WHERE state IN ({','.join('?' * len(states))})"
        args: list[Any] = [time.time(), *states]
        if sink:
            q += " AND sink=?"
            args.append(sink)
        with self._tx():
            return self.db.execute(q, args).rowcount

    def purge(self, done_older_than: float) -> int:
        """Delete envelopes delivered (DONE) to every sink more than *done_older_than* seconds ago."""
        cutoff = time.time() - done_older_than
        with self._tx():
            n = self.db.execute(
                "DELETE FROM entries WHERE created < ? AND seq NOT IN (SELECT seq FROM deliveries WHERE state != 'DONE' OR updated >= ?)",
                (cutoff, cutoff),
            ).rowcount
        return n

    def counts(self) -> dict[str, int]:
        (entries,) = self.db.execute("SELECT COUNT(*) FROM entries").fetchone()
        (rej,) = self.db.execute("SELECT COUNT(*) FROM rejections").fetchone()
        return {"entries": int(entries), "rejections": int(rej)}


def _short(value: Any, limit: int = 500) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
