"""Catalogue sinks: one small protocol, registered through the ``mxcat.sinks`` entry points.

A sink takes envelopes from the outbox (records, tables; see :mod:`mxcat.records`) and stores them
in its catalogue with idempotent upserts keyed by the envelope id, so that a batch delivered twice
(after a crash between the store and the acknowledgement) is stored once in effect.

* ``put(envelopes) -> Receipt``: store a batch. Raise :class:`~mxcat.errors.SinkUnavailable` when
  the catalogue cannot be reached (the outbox retries later) or :class:`~mxcat.errors.SinkRejected`
  when it refuses the whole batch; refuse single envelopes through ``Receipt.rejected``.
* ``health() -> Health``: a cheap reachability check.
* ``close()``: release connections.

Shipped: ``embedded`` (the default SQLite catalogue), ``mongodb``, and for tests ``memory`` and
``flaky``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from mxcat.errors import ConfigError

Envelope = Mapping[str, Any]


@dataclass(slots=True)
class Receipt:
    """What a sink did with a batch: ids stored, ids refused with the sink's reason, and ids held
    back to be retried later with the reason (any id in none of these is retried, too)."""

    stored: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""


@runtime_checkable
class Sink(Protocol):
    """The protocol every catalogue sink implements."""

    name: str

    def put(self, envelopes: Sequence[Envelope]) -> Receipt: ...

    def health(self) -> Health: ...

    def close(self) -> None: ...


def sink_types() -> dict[str, Any]:
    """Registered sink types (entry points of group ``mxcat.sinks``) by name."""
    return {ep.name: ep for ep in entry_points(group="mxcat.sinks")}


def create(name: str, type_: str, options: Mapping[str, Any], *, source: str | None = None) -> Sink:
    """Instantiate a configured sink; an unknown type names the known ones.

    A sink class may declare ``Options`` (a pydantic model) to validate its options; secrets given
    as ``X_env`` / ``X_file`` are resolved first (:func:`mxcat.config.secret_from`).
    """
    from pydantic import ValidationError

    from mxcat.config import secret_from

    types = sink_types()
    ep = types.get(type_)
    if ep is None:
        raise ConfigError(f"unknown sink type {type_!r}; known: {', '.join(sorted(types)) or 'none (is mxcat installed?)'}",
                          key=f"sinks.{name}.type", path=source)
    cls = ep.load()
    model = getattr(cls, "Options", None)
    values = dict(options)
    if model is not None:
        try:
            # the validated values, not the raw ones: options given as text (MXCAT_SINK_<NAME>_<OPTION>)
            # arrive converted ("false" -> False, "20" -> 20.0)
            values = model.model_validate(values).model_dump(exclude_unset=True)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            msg = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
            raise ConfigError(msg, key=f"sinks.{name}.options.{key}", path=source) from err
    opts = secret_from(values, where=f"sinks.{name}.options")
    return cls(name=name, **opts)
