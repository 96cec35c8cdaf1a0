"""From files to batches: pick the adapter, parse, and place each result in the subject hierarchy.

The dataset subject comes from the command line or configuration (facility, beamline, proposal,
session, sample, dataset), completed by hints the adapter found in the file (a dataset name from a
template or prefix). Each ``processing`` result becomes its own processing subject under the
dataset, named after the adapter, the file's sha256 and the result label, so a new run (another
file) is a new subject and the old results are kept; ``dataset`` results attach to the dataset.
The provenance run is derived from the file's hash: the same file ingested twice changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from mxcat.adapters import Adapter, Parsed, claim, registry
from mxcat.adapters._util import sha256_file
from mxcat.errors import ParseError, ValidationError
from mxcat.ingest import Rejection
from mxcat.records import LEVELS, Batch, Provenance, Subject

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Where ingested files belong, as far as the caller knows."""

    facility: str | None = None
    beamline: str | None = None
    proposal: str | None = None
    session: str | None = None
    sample: str | None = None
    dataset: str | None = None

    def dataset_subject(self, hints: dict[str, str], path: Path) -> Subject:
        levels = {lv: getattr(self, lv) for lv in LEVELS[:6]}
        for lv in ("facility", "beamline", "proposal", "session", "sample", "dataset"):
            if levels.get(lv) is None and hints.get(lv):
                levels[lv] = _clean(hints[lv])
        if levels["dataset"] is None:
            levels["dataset"] = _clean(path.stem)
        if levels["facility"] is None and levels["beamline"] is None:
            raise ValidationError("subject", str(path), "no facility or beamline: give --beamline/--facility or set them in the configuration")
        return Subject(**{k: v for k, v in levels.items() if v is not None})


def _clean(name: str) -> str:
    return name.replace("/", "_").replace("\n", " ").strip() or "unnamed"


@dataclass
class FileOutcome:
    path: Path
    adapter: str | None
    batches: list[Batch] = field(default_factory=list)
    error: ParseError | ValidationError | None = None
    notes: list[str] = field(default_factory=list)
    dropped: list[Rejection] = field(default_factory=list)
    """Values the file holds but mmCAT forbids (left out by the adapter), recorded like rejections."""


def batches_for(parsed: Parsed, sha256: str, context: Context) -> list[Batch]:
    """One batch per result of a parsed file."""
    dataset = context.dataset_subject(parsed.hints, parsed.path)
    out = []
    for i, result in enumerate(parsed.results):
        label = result.label or (str(i + 1) if len(parsed.results) > 1 else None)
        run = sha256[:16] + (f":{label}" if label else "")
        if result.level == "processing":
            name = f"{parsed.adapter}-{sha256[:10]}" + (f"-{_clean(label)}" if label else "")
            subject = dataset.child(processing=name)
        else:
            subject = dataset
        prov = Provenance(run=run, program=parsed.program, version=parsed.version, adapter=parsed.adapter,
                          source=str(parsed.path.resolve()), sha256=sha256)
        batch = Batch(subject, prov)
        batch.observations.extend(result.values)
        if result.level == "processing" and label:
            batch.add("mmcat_processing.variant", _clean(label).replace(" ", "_"))
        for category, rows in result.tables:
            batch.add_table(category, rows)
        out.append(batch)
    return out


def read_file(path: Path, context: Context, adapters: dict[str, Adapter] | None = None, *, adapter: str | None = None) -> FileOutcome:
    """Detect, parse and place one file; errors are returned, not raised, so a bad file never stops the rest."""
    adapters = adapters if adapters is not None else registry()
    try:
        if adapter is not None:
            if adapter not in adapters:
                raise ParseError(f"unknown adapter {adapter!r}; known: {', '.join(sorted(adapters))}", path=path)
            chosen: Adapter | None = adapters[adapter]
        else:
            chosen = claim(path, adapters)
        if chosen is None:
            return FileOutcome(path, None, notes=["no adapter claims this file"])
        parsed = chosen.parse(path)
        outcome = FileOutcome(path, chosen.name, notes=list(parsed.notes),
                              dropped=[Rejection(k, v, r, None, str(path)) for k, v, r in parsed.dropped])
        outcome.batches = batches_for(parsed, sha256_file(path), context)
        return outcome
    except (ParseError, ValidationError) as err:
        return FileOutcome(path, adapter, error=err)
    except Exception as err:  # noqa: BLE001 - an adapter bug must not stop the other files
        log.debug("adapter failed on %s", path, exc_info=True)
        return FileOutcome(path, adapter, error=ParseError(f"adapter bug ({type(err).__name__}: {err}); please report", path=path))
