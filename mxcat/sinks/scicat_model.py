"""What the ``scicat`` sink writes: mmCAT envelopes as SciCat dataset documents, with no HTTP.

One dataset per mxcat ``dataset`` subject (type ``raw``) and per ``processing`` subject (``derived``,
``inputDatasets`` = the parent dataset and ``subject.inputs``, ``usedSoftware`` from provenance), pid
``{pid_prefix}/{uuid5(subject id)}``. Each record becomes ``{value, unit}`` (plus ``human_name`` with
``names: human``) with the unit spelled as SciCat's mathjs converter reads it (the ``scicat`` column
of the ``_mmcat_unit`` crosswalk, ``""`` when dimensionless). Keys are the flat mmCAT keys
percent-encoded (``.`` -> ``%2E``, ``%`` -> ``%25``, NUL -> ``%00``, leading ``$`` -> ``%24``):
MongoDB cannot query field names with dots, older servers cannot store them and no MongoDB stores
a NUL in a field name; current SciCat stores dotted keys in this same encoding. Image-range records
go to their dataset under ``image_range.<name>.<key>``; records above dataset level (beamline,
proposal, session, sample) have no dataset (:meth:`Documents.place` answers None). Tables up to
``max_table_bytes`` become one entry ``{value: {columns, rows}, unit: ""}`` named by the category.
The field sets follow the v3 and v4 dataset DTOs of SciCatProject/scicat-backend-next. Bodies are
compact UTF-8 JSON (:func:`dumps`): control characters and quotes in subject names are escaped, and
NaN or infinities are refused rather than sent as invalid JSON.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mxcat.errors import UnknownKeyError
from mxcat.ontology.export import scicat_field_name as encode_key
from mxcat.ontology.export import scicat_key_of as decode_key  # noqa: F401 - re-exported by mxcat.sinks.scicat
from mxcat.records import Subject
from mxcat.sinks import Envelope

BODY_LIMIT = 16 * 1024 * 1024
"""The SciCat backend's JSON body limit (``json({limit: "16mb"})``)."""
DEFAULT_MAX_BODY = BODY_LIMIT - 256 * 1024
PID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://mxcat.invalid/sinks/scicat/dataset")


def dataset_pid(subject: Subject | str, prefix: str = "mxcat") -> str:
    """The deterministic pid of the SciCat dataset of a subject (or subject id)."""
    sid = subject.id if isinstance(subject, Subject) else subject
    return f"{prefix}/{uuid.uuid5(PID_NAMESPACE, sid)}"


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; ValueError for NaN, infinities or text that is not Unicode (lone surrogates)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class Refused(Exception):
    """An envelope the sink refuses before any request (its text is the reason)."""


@dataclass(slots=True)
class Item:
    """One scientificMetadata entry and the envelopes it carries (same key: the last one wins)."""

    key: str
    entry: dict[str, Any]
    ids: list[str]
    size: int


@dataclass(slots=True)
class Target:
    """One SciCat dataset and what a batch writes into it."""

    subject: Subject
    derived: bool
    pid: str
    items: dict[str, Item] = field(default_factory=dict)
    provenance: list[Mapping[str, Any]] = field(default_factory=list)

    def ids(self) -> list[str]:
        return [i for it in self.items.values() for i in it.ids]


def fit(items: Sequence[Item], budget: int) -> tuple[list[Item], list[Item]]:
    """Items that fit one scientificMetadata object of *budget* bytes (in order), and the rest."""
    kept: list[Item] = []
    rest: list[Item] = []
    size = 2
    for it in items:
        if size + it.size + 1 <= budget:
            kept.append(it)
            size += it.size + 1
        else:
            rest.append(it)
    return kept, rest


def pack(items: Sequence[Item], budget: int) -> list[list[Item]]:
    """Items in consecutive groups whose scientificMetadata objects stay within *budget* bytes."""
    chunks: list[list[Item]] = []
    cur: list[Item] = []
    size = 2
    for it in items:
        if cur and size + it.size + 1 > budget:
            chunks.append(cur)
            cur, size = [], 2
        cur.append(it)
        size += it.size + 1
    if cur:
        chunks.append(cur)
    return chunks


class Documents:
    """Builds the datasets and entries of one sink's configuration (API version, groups, names)."""

    def __init__(self, *, api: str, owner_group: str, access_groups: Iterable[str], contact_email: str, owner: str | None,
                 principal_investigator: str | None, pid_prefix: str, names: str, schema_url: str | None, max_table_bytes: int) -> None:
        self.api = api
        self.owner_group = owner_group
        self.access_groups = list(access_groups)
        self.contact_email = contact_email
        self.owner = owner
        self.principal_investigator = principal_investigator
        self.pid_prefix = pid_prefix
        self.names = names
        self.schema_url = schema_url
        self.max_table_bytes = max_table_bytes
        self._onto: Any = None

    # -- envelopes to entries ------------------------------------------------------------------------

    @staticmethod
    def place(env: Envelope) -> tuple[Subject, str] | None:
        """The dataset or processing subject an envelope goes to, and the key prefix; None above dataset level."""
        s = Subject.from_dict(env["subject"])
        if s.kind in ("dataset", "processing"):
            return s, ""
        if s.kind == "image_range":
            base = s.at("processing") if s.processing is not None else s.at("dataset")
            if base is not None:
                return base, f"image_range.{s.image_range}."
        return None

    def target(self, subject: Subject) -> Target:
        return Target(subject, subject.kind == "processing", dataset_pid(subject, self.pid_prefix))

    def entry(self, env: Envelope, prefix: str) -> tuple[str, dict[str, Any]]:
        """The field name and ``{value, unit}`` entry of an envelope; :class:`Refused` for what SciCat should not get."""
        if env["type"] == "record":
            entry: dict[str, Any] = {"value": env["value"], "unit": self._unit(env.get("unit"))}
            if self.names == "human":
                label = self._label(env["key"])
                if label:
                    entry["human_name"] = label
            return encode_key(prefix + env["key"]), entry
        if env["type"] == "table":
            value = {"columns": list(env["columns"]), "rows": list(env["rows"])}
            n = len(dumps(value))
            if n > self.max_table_bytes:
                raise Refused(f"table {env['category']} of {n} bytes exceeds max_table_bytes ({self.max_table_bytes}); "
                              "it stays in the embedded catalogue")
            return encode_key(prefix + env["category"]), {"value": value, "unit": ""}
        raise Refused(f"unknown envelope type {env['type']!r}")

    def _ontology(self) -> Any:
        if self._onto is None:
            from mxcat.ontology import load

            self._onto = load()
        return self._onto

    def _unit(self, code: str | None) -> str:
        if not code:
            return ""
        return self._ontology().units.spelling(code, "scicat") or ""

    def _label(self, key: str) -> str | None:
        try:
            item, _ = self._ontology().lookup(key)
        except UnknownKeyError:
            return None
        return item.label or None

    # -- dataset documents -----------------------------------------------------------------------------

    def create_body(self, t: Target, items: Sequence[Item]) -> dict[str, Any]:
        """The ``POST`` body creating the dataset of *t* with the given entries."""
        s = t.subject
        owner = self.owner or s.proposal or s.beamline or s.facility or "mxcat"
        pi = self.principal_investigator or owner
        body: dict[str, Any] = {
            "pid": t.pid,
            "type": "derived" if t.derived else "raw",
            "owner": owner,
            "ownerGroup": self.owner_group,
            "accessGroups": self.access_groups,
            "contactEmail": self.contact_email,
            "sourceFolder": self._source_folder(t),
            "creationTime": self._creation_time(t),
            "datasetName": (f"{s.dataset} {s.processing}" if s.dataset else str(s.processing)) if t.derived else str(s.dataset),
            "description": f"mxcat {s.kind} {s.path}",
        }
        if self.schema_url:
            body["scientificMetadataSchema"] = self.schema_url
        v3 = self.api == "v3"
        if t.derived:
            if v3:
                body["investigator"] = pi
            else:
                body["principalInvestigators"] = [pi]
            body["inputDatasets"] = self._inputs(s)
            body["usedSoftware"] = self._software(t)
        else:
            if v3:
                body["principalInvestigator"] = pi
            else:
                body["principalInvestigators"] = [pi]
            body["creationLocation"] = "/" + "/".join(x for x in (s.facility, s.beamline) if x)
        if s.proposal:
            body["proposalId" if v3 else "proposalIds"] = s.proposal if v3 else [s.proposal]
        if s.sample and not (v3 and t.derived):  # the v3 derived model has no sampleId
            body["sampleId" if v3 else "sampleIds"] = s.sample if v3 else [s.sample]
        body["scientificMetadata"] = {it.key: it.entry for it in items}
        return body

    def _inputs(self, s: Subject) -> list[str]:
        ids: list[str] = []
        parent = s.at("dataset")
        if parent is not None:
            ids.append(parent.id)
        for ref in s.inputs:
            ids.append(Subject.parse(ref).id if "=" in ref else ref)
        return list(dict.fromkeys(dataset_pid(i, self.pid_prefix) for i in ids))

    @staticmethod
    def _software(t: Target) -> list[str]:
        names = []
        for p in t.provenance:
            if p.get("program"):
                names.append(f"{p['program']} {p.get('version') or ''}".strip())
            elif p.get("adapter"):
                names.append(f"mxcat adapter {p['adapter']}")
        return list(dict.fromkeys(names))

    @staticmethod
    def _source_folder(t: Target) -> str:
        for p in t.provenance:
            src = p.get("source")
            if isinstance(src, str) and src.startswith("/"):
                return posixpath.dirname(src.rstrip("/")) or "/"
        s = t.subject
        return "/" + "/".join(str(getattr(s, lv)) for lv in ("facility", "beamline", "proposal", "session", "sample", "dataset", "processing")
                              if getattr(s, lv) is not None)

    @staticmethod
    def _creation_time(t: Target) -> str:
        times = []
        for p in t.provenance:
            try:
                d = datetime.fromisoformat(str(p.get("created", "")).replace("Z", "+00:00"))
            except ValueError:
                continue
            times.append(d if d.tzinfo else d.replace(tzinfo=UTC))
        when = min(times) if times else datetime.now(UTC)
        return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
