"""The public Python API for pipelines, beamline control and plugins: :class:`Catalogue`.

>>> from mxcat.client import Catalogue
>>> from mxcat.records import Batch, Provenance, Subject
>>> with Catalogue.open() as cat:                                        # doctest: +SKIP
...     ds = Subject(facility="ESRF", beamline="ID30A-1", proposal="mx2532", session="20261121",
...                  sample="lyso1", dataset="lyso1_1_1")
...     receipt = cat.ingest(Batch(ds, Provenance(run="collect-1")).add("mmcat_collection.exposure_time", 0.01))
...     cat.query("mmcat_collection.exposure_time < 0.1")

``ingest`` validates against mmCAT (bad values are rejected one by one with the reason and
recorded in the outbox), writes the good ones durably to the outbox, then delivers what it can
within ``deliver_timeout`` seconds; whatever a sink could not take waits in the outbox for
``mxcat deliver`` or the background deliverer (``start_delivery``). Queries and ``show`` read the
configured query sink (the embedded catalogue by default).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxcat.config import Config, load_config
from mxcat.deliver import Backoff, Deliverer, Stats
from mxcat.errors import ConfigError, ValidationError
from mxcat.ingest import Prepared, Rejection, prepare
from mxcat.ontology import Ontology, load
from mxcat.outbox import Outbox
from mxcat.query import parse
from mxcat.records import Batch, Provenance, Subject
from mxcat.sinks import Sink, create


@dataclass
class IngestReceipt:
    """What one ingest did: stored in the outbox, rejected (with reasons), delivered so far."""

    records: int = 0
    tables: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    delivered: Stats = field(default_factory=Stats)
    subjects: list[str] = field(default_factory=list)


@dataclass
class SubjectView:
    """A subject with its records grouped by ontology category, its tables and its children."""

    subject_id: str
    kind: str
    path: str
    records: dict[str, list[dict[str, Any]]]
    tables: list[dict[str, Any]]
    children: list[tuple[str, str, str]]


class Catalogue:
    """mxcat's catalogue as seen by a program: ingest, record, query, show, deliver."""

    def __init__(self, config: Config, ontology: Ontology | None = None, *, sinks: dict[str, Sink] | None = None) -> None:
        self.config = config.resolved()
        self.ontology = ontology or load()
        self.outbox = self._open_outbox()
        self._sinks: dict[str, Sink] = dict(sinks or {})
        self._targets: list[str] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _open_outbox(self) -> Outbox:
        path = self.config.outbox.path
        if path is None:
            raise ConfigError("no outbox path", key="outbox.path", path=self.config.source)
        return Outbox(path, synchronous=self.config.outbox.synchronous)

    @classmethod
    def open(cls, config: str | Path | Config | None = None, **overrides: Any) -> Catalogue:
        """Open from a configuration file (or the default configuration) with optional overrides."""
        cfg = config if isinstance(config, Config) else load_config(config, overrides or None)
        return cls(cfg)

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sink_names(self) -> list[str]:
        """The sinks this catalogue stores for and delivers to: the enabled ones, or those chosen by :meth:`use_sinks`."""
        if self._targets is not None:
            return list(self._targets)
        return [n for n, s in self.config.sinks.items() if s.enabled]

    def use_sinks(self, names: list[str]) -> list[str]:
        """Store for and deliver to exactly these sinks (enabled or not). Each name is a configured
        sink's name, or a sink type that exactly one configured sink has; returns the sink names."""
        chosen: list[str] = []
        for n in names:
            if n in self.config.sinks:
                chosen.append(n)
                continue
            of_type = [k for k, s in self.config.sinks.items() if s.type == n]
            if len(of_type) != 1:
                known = ", ".join(f"{k} ({s.type})" for k, s in self.config.sinks.items())
                why = "several sinks have that type" if of_type else "no such sink"
                raise ConfigError(f"--sink {n}: {why}; configured: {known}", key="sinks", path=self.config.source)
            chosen.append(of_type[0])
        self._targets = list(dict.fromkeys(chosen))
        return list(self._targets)

    def sink(self, name: str) -> Sink:
        if name not in self._sinks:
            sc = self.config.sinks.get(name)
            if sc is None:
                raise ConfigError(f"no sink named {name!r}; configured: {', '.join(self.config.sinks)}", key="sinks")
            self._sinks[name] = create(name, sc.type, sc.options, source=self.config.source)
        return self._sinks[name]

    # -- writing ----------------------------------------------------------------------------------

    def prepare(self, batch: Batch) -> Prepared:
        return prepare(batch, self.ontology)

    def ingest(self, batch: Batch, *, deliver_timeout: float | None = 5.0) -> IngestReceipt:
        """Validate, store durably in the outbox, then deliver for up to *deliver_timeout* seconds."""
        prepared = self.prepare(batch)
        envelopes = [r.to_envelope() for r in prepared.records] + [t.to_envelope() for t in prepared.tables]
        put = self.outbox.put(envelopes, self.sink_names)
        self.outbox.record_rejections(prepared.rejected)
        receipt = IngestReceipt(
            records=len(prepared.records), tables=len(prepared.tables), new=put.new, changed=put.changed,
            unchanged=put.unchanged, rejected=prepared.rejected, warnings=prepared.warnings,
            subjects=sorted({r.subject.path for r in prepared.records} | {t.subject.path for t in prepared.tables}),
        )
        if deliver_timeout is not None and deliver_timeout > 0 and envelopes and self._thread is None:
            receipt.delivered = self.deliver(timeout=deliver_timeout)
        return receipt

    def record(self, subject: Subject, key: str, value: Any, unit: str | None = None, *,
               provenance: Provenance | None = None, deliver_timeout: float | None = 5.0) -> IngestReceipt:
        """Store one value; raises :class:`ValidationError` when it is rejected."""
        batch = Batch(subject, provenance or Provenance(run="default")).add(key, value, unit)
        receipt = self.ingest(batch, deliver_timeout=deliver_timeout)
        if receipt.rejected:
            r = receipt.rejected[0]
            raise ValidationError(r.key, r.value, r.reason)
        return receipt

    # -- delivering -------------------------------------------------------------------------------

    def _deliverer(self, outbox: Outbox) -> Deliverer:
        d = self.config.delivery
        sinks = {n: self.sink(n) for n in self.sink_names}
        return Deliverer(outbox, sinks, batch_size=d.batch_size, lease=d.lease,
                         backoff=Backoff(d.backoff_initial, 2.0, d.backoff_max, d.jitter))

    def deliver(self, timeout: float | None = None) -> Stats:
        """Deliver what can be delivered now (bounded by *timeout* seconds)."""
        return self._deliverer(self.outbox).drain(timeout)

    def start_delivery(self, idle: float = 0.5) -> None:
        """Deliver in a background thread until :meth:`close` (for long-running programs)."""
        if self._thread is not None:
            return
        outbox = self._open_outbox()
        deliverer = self._deliverer(outbox)
        self._stop.clear()

        def run() -> None:
            try:
                deliverer.run(self._stop, idle)
            finally:
                outbox.close()

        self._thread = threading.Thread(target=run, name="mxcat-deliverer", daemon=True)
        self._thread.start()

    def stop_delivery(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=30)
            self._thread = None

    # -- reading ----------------------------------------------------------------------------------

    def _query_sink(self) -> Any:
        name = self.config.query_sink
        if name is None:
            raise ConfigError("no sink can answer queries: configure an embedded or mongodb sink", key="query_sink")
        sink = self.sink(name)
        if not hasattr(sink, "query"):
            raise ConfigError(f"sink {name!r} cannot answer queries", key="query_sink")
        return sink

    def query(self, expression: str | None, *, limit: int = 1000, **levels: str) -> list[dict[str, Any]]:
        """Subjects matching a filter expression (see :mod:`mxcat.query`) and subject-level filters."""
        node = parse(expression, self.ontology) if expression and expression.strip() else None
        return self._query_sink().query(node, {k: v for k, v in levels.items() if v is not None}, limit)

    def resolve_subject(self, ref: str | Subject) -> tuple[str, str, str]:
        sink = self._query_sink()
        if isinstance(ref, Subject):
            ref = ref.path
        hits = sink.find_subjects(ref)
        exact = [h for h in hits if h[2] == ref or h[0] == ref]
        if len(exact) == 1:
            return exact[0]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise ValidationError("subject", ref, "no such subject (give its path or the start of its id)")
        raise ValidationError("subject", ref, f"ambiguous: {', '.join(h[2] for h in hits[:5])}")

    def show(self, ref: str | Subject) -> SubjectView:
        """One subject: its records grouped by category, with units and provenance."""
        sink = self._query_sink()
        sid, kind, path = self.resolve_subject(ref)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for r in sink.subject_records(sid):
            grouped.setdefault(r["key"].split(".", 1)[0], []).append(r)
        return SubjectView(sid, kind, path, grouped, sink.subject_tables(sid), sink.children(sid))

    # -- housekeeping -----------------------------------------------------------------------------

    def close(self) -> None:
        self.stop_delivery()
        for s in self._sinks.values():
            s.close()
        self._sinks.clear()
        self.outbox.close()


def open_catalogue(config: str | Path | None = None, **overrides: Any) -> Catalogue:
    """Shorthand for :meth:`Catalogue.open`."""
    return Catalogue.open(config, **overrides)


__all__ = ["Batch", "Catalogue", "IngestReceipt", "Provenance", "Subject", "SubjectView", "open_catalogue"]

