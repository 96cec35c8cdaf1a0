"""``mongodb``: records, subjects and tables in MongoDB, with idempotent upserts.

Collections (names prefixed by ``collection_prefix``):

* ``records``: one document per record, ``_id`` = record id (unique by construction);
* ``subjects``: one document per subject, ``_id`` = subject id, hierarchy under ``_subject``, and the
  latest value of every key nested as ``{category: {selector: {item: {value, unit, record}}}}`` so
  that the dotted canonical key is the query path (``reflns_shell.outer.pdbx_CC_half.value``);
* ``tables``: one document per table, split into ``tables_chunks`` documents of at most
  ``chunk_bytes`` of rows when the table would not fit MongoDB's 16 MB document limit.

A record value too large for a document is refused (dead-lettered with the reason), never dropped
silently. Network errors, server restarts and time-outs are ``SinkUnavailable`` (the outbox
retries); duplicate-key races are idempotent successes. The connection URI comes from the
configuration's secret handling (environment or a protected file) and is never logged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mxcat.errors import ConfigError, SinkRejected, SinkUnavailable
from mxcat.records import Subject
from mxcat.sinks import Envelope, Health, Receipt

MAX_DOC = 16 * 1024 * 1024
RECORD_LIMIT = 15 * 1024 * 1024


class MongoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uri_env: str | None = None
    uri_file: str | None = None
    database: str = "mxcat"
    collection_prefix: str = ""
    timeout_ms: int = Field(5000, gt=0)
    chunk_bytes: int = Field(8 * 1024 * 1024, gt=1024 * 1024, le=15 * 1024 * 1024)
    tls: bool | None = None


class MongoSink:
    """Delivers envelopes to MongoDB. The URI comes from ``uri_env`` or ``uri_file``, never the file itself."""

    Options = MongoOptions

    def __init__(self, name: str = "mongodb", uri: str | None = None, database: str = "mxcat", collection_prefix: str = "",
                 timeout_ms: int = 5000, chunk_bytes: int = 8 * 1024 * 1024, tls: bool | None = None) -> None:
        try:
            import pymongo
        except ImportError as err:
            raise ConfigError("the mongodb sink needs pymongo: pip install 'mxcat[mongodb]'", key=f"sinks.{name}") from err
        if not uri:
            raise ConfigError("no MongoDB URI (set uri_env or uri_file)", key=f"sinks.{name}.uri")
        self.name = name
        self._pymongo = pymongo
        kw: dict[str, Any] = {"serverSelectionTimeoutMS": timeout_ms, "connectTimeoutMS": timeout_ms, "socketTimeoutMS": timeout_ms * 4,
                              "retryWrites": False}
        if tls is not None:
            kw["tls"] = tls
        self.client = pymongo.MongoClient(uri, **kw)
        db = self.client[database]
        self.records = db[f"{collection_prefix}records"]
        self.subjects = db[f"{collection_prefix}subjects"]
        self.tables = db[f"{collection_prefix}tables"]
        self.chunks = db[f"{collection_prefix}tables_chunks"]
        self.chunk_bytes = chunk_bytes
        self._indexed = False

    def _ensure_indexes(self) -> None:
        if self._indexed:
            return
        self.records.create_index([("subject_id", 1), ("key", 1)])
        self.records.create_index([("key", 1), ("value", 1)])
        for lv in ("beamline", "proposal", "session", "dataset"):
            self.subjects.create_index([(f"_subject.{lv}", 1)])
        self.chunks.create_index([("table_id", 1), ("n", 1)], unique=True)
        self._indexed = True

    def put(self, envelopes: Sequence[Envelope]) -> Receipt:
        pm = self._pymongo
        UpdateOne, ReplaceOne = pm.UpdateOne, pm.ReplaceOne
        receipt = Receipt()
        rec_ops, subj_ops, table_ops, chunk_ops = [], [], [], []
        subject_sets: dict[str, dict[str, Any]] = {}
        for env in envelopes:
            sid = env["subject_id"]
            if sid not in subject_sets:
                s: Subject | None = Subject.from_dict(env["subject"])
                while s is not None and s.id not in subject_sets:  # ancestors too, so the hierarchy can be browsed
                    parent = s.parent
                    subject_sets[s.id] = {"_subject": {"kind": s.kind, "path": s.path, "parent": parent.id if parent else None,
                                                       **s.to_dict()}}
                    s = parent
            if env["type"] == "record":
                doc = {"_id": env["id"], "subject_id": sid, "key": env["key"], "value": env["value"], "unit": env.get("unit"),
                       "provenance": env["provenance"]}
                size = len(json.dumps(doc, default=str))
                if size > RECORD_LIMIT:
                    receipt.rejected[env["id"]] = f"record of {size} bytes exceeds MongoDB's 16 MB document limit"
                    continue
                rec_ops.append(ReplaceOne({"_id": env["id"]}, doc, upsert=True))
                subject_sets[sid][env["key"]] = {"value": env["value"], "unit": env.get("unit"), "record": env["id"]}
            elif env["type"] == "table":
                rows = env["rows"]
                text = json.dumps(rows)
                base = {"_id": env["id"], "subject_id": sid, "category": env["category"], "columns": env["columns"],
                        "n_rows": len(rows), "provenance": env["provenance"]}
                if len(text) + 4096 <= min(self.chunk_bytes, MAX_DOC):
                    table_ops.append(ReplaceOne({"_id": env["id"]}, {**base, "rows": rows, "chunks": 0}, upsert=True))
                else:
                    parts = _split_rows(rows, self.chunk_bytes)
                    for n, part in enumerate(parts):
                        chunk_ops.append(ReplaceOne({"_id": f"{env['id']}:{n}"}, {"_id": f"{env['id']}:{n}", "table_id": env["id"], "n": n,
                                                                                    "rows": part}, upsert=True))
                    table_ops.append(ReplaceOne({"_id": env["id"]}, {**base, "rows": [], "chunks": len(parts)}, upsert=True))
            else:
                receipt.rejected[env["id"]] = f"unknown envelope type {env['type']!r}"
                continue
            receipt.stored.append(env["id"])
        for sid, fields in subject_sets.items():
            subj_ops.append(UpdateOne({"_id": sid}, {"$set": fields}, upsert=True))
        try:
            self._ensure_indexes()
            for coll, ops in ((self.records, rec_ops), (self.chunks, chunk_ops), (self.tables, table_ops), (self.subjects, subj_ops)):
                if ops:
                    self._bulk(coll, ops)
        except (pm.errors.ConnectionFailure, pm.errors.ServerSelectionTimeoutError, pm.errors.NetworkTimeout,
                pm.errors.AutoReconnect, pm.errors.ExecutionTimeout) as err:
            raise SinkUnavailable(f"MongoDB unreachable: {type(err).__name__}", sink=self.name) from err
        except pm.errors.OperationFailure as err:
            if err.code in (13, 18, 8000):  # unauthorised / authentication failed
                raise SinkRejected(f"MongoDB refused the credentials: {err.code}", sink=self.name) from err
            raise SinkUnavailable(f"MongoDB operation failed ({err.code}); will retry", sink=self.name) from err
        return receipt

    def _bulk(self, coll: Any, ops: list[Any]) -> None:
        pm = self._pymongo
        try:
            coll.bulk_write(ops, ordered=False)
        except pm.errors.BulkWriteError as err:
            errors = err.details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != 11000]
            if other:
                raise SinkRejected(f"MongoDB refused {len(other)} write(s): {other[0].get('errmsg', '')[:300]}", sink=self.name) from err
            # duplicate keys from concurrent upserts: the documents are there, which is what we wanted

    def health(self) -> Health:
        try:
            self.client.admin.command("ping")
        except self._pymongo.errors.PyMongoError as err:
            return Health(False, type(err).__name__)
        return Health(True, "ping ok")

    def close(self) -> None:
        self.client.close()

    # -- reading ----------------------------------------------------------------------------------

    def query(self, node: Any, filters: dict[str, str] | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        from mxcat.query import to_mongo

        flt: dict[str, Any] = to_mongo(node) if node is not None else {}
        if filters:
            flt = {"$and": [flt, *({f"_subject.{k}": v} for k, v in filters.items())]}
        if "$and" in flt and not flt["$and"]:
            flt = {}
        out = []
        for doc in self.subjects.find(flt, {"_subject": 1}).limit(limit):
            out.append({"subject_id": doc["_id"], "kind": doc["_subject"].get("kind"), "path": doc["_subject"].get("path")})
        return sorted(out, key=lambda d: d["path"] or "")

    def find_subjects(self, ref: str) -> list[tuple[str, str, str]]:
        """Subjects whose id starts with *ref* or whose path equals *ref*."""
        import re

        flt = {"$or": [{"_id": {"$regex": "^" + re.escape(ref)}}, {"_subject.path": ref}]}
        return [(d["_id"], d["_subject"]["kind"], d["_subject"]["path"]) for d in self.subjects.find(flt, {"_subject": 1}).limit(20)]

    def subject_records(self, subject_id: str) -> list[dict[str, Any]]:
        out = []
        for d in self.records.find({"subject_id": subject_id}).sort("key", 1):
            p = d.get("provenance") or {}
            out.append({"key": d["key"], "value": d["value"], "unit": d.get("unit"), "run": p.get("run"), "program": p.get("program"),
                        "version": p.get("version"), "adapter": p.get("adapter"), "source": p.get("source"), "created": p.get("created")})
        return out

    def subject_tables(self, subject_id: str) -> list[dict[str, Any]]:
        return [{"category": d["category"], "columns": d["columns"], "n_rows": d["n_rows"], "rows": self.table_rows(d["_id"])}
                for d in self.tables.find({"subject_id": subject_id}).sort("category", 1)]

    def children(self, subject_id: str) -> list[tuple[str, str, str]]:
        docs = self.subjects.find({"_subject.parent": subject_id}, {"_subject": 1})
        return sorted((d["_id"], d["_subject"]["kind"], d["_subject"]["path"]) for d in docs)

    def table_rows(self, table_id: str) -> list[list[Any]]:
        doc = self.tables.find_one({"_id": table_id})
        if doc is None:
            return []
        if not doc.get("chunks"):
            return doc["rows"]
        rows: list[list[Any]] = []
        for ch in self.chunks.find({"table_id": table_id}).sort("n", 1):
            rows.extend(ch["rows"])
        return rows


def _split_rows(rows: list[Any], limit: int) -> list[list[Any]]:
    parts: list[list[Any]] = []
    cur: list[Any] = []
    size = 0
    for row in rows:
        n = len(json.dumps(row)) + 1
        if n > limit - 1024:
            raise SinkRejected(f"one table row of {n} bytes exceeds the chunk size {limit}")
        if cur and size + n > limit - 1024:
            parts.append(cur)
            cur, size = [], 0
        cur.append(row)
        size += n
    if cur:
        parts.append(cur)
    return parts
