"""``mxcat push|show|query|deliver|outbox|config``: the catalogue from the command line."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mxcat.errors import ConfigError, ParseError, ValidationError

console = Console()
outbox_app = typer.Typer(help="Inspect and manage the durable outbox.", no_args_is_help=True)
config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)


def _catalogue() -> Any:
    from mxcat.cli import state
    from mxcat.client import Catalogue

    return Catalogue.open(state.config)


def report_ingest(receipt: Any, *, quiet: bool = False) -> None:
    """A readable summary of an ingest: stored, unchanged, rejected with reasons, delivered."""
    console.print(f"{receipt.records} record(s), {receipt.tables} table(s): {receipt.new} new, {receipt.changed} changed, "
                  f"{receipt.unchanged} unchanged; delivered {receipt.delivered.delivered}"
                  + (f", {receipt.delivered.retried} waiting in the outbox" if receipt.delivered.retried else ""), highlight=False)
    for key, w in receipt.warnings:
        console.print(f"  [yellow]warning[/] {escape(key)}: {escape(w)}", highlight=False)
    for r in receipt.rejected:
        console.print(f"  [red]rejected[/] {escape(str(r))}", highlight=False)
    if not quiet:
        for e in receipt.delivered.errors[:3]:
            console.print(f"  [yellow]delivery[/] {escape(e)}", highlight=False)


def push(
    files: list[Path] = typer.Argument(..., help="JSON documents in mxcat's push format (subject, provenance, values, tables)."),
    as_json: bool = typer.Option(False, "--json", help="Print the receipt as JSON."),
) -> None:
    """Ingest key/value documents in mxcat's JSON push format (what pipelines and MXCuBE send)."""
    from mxcat.records import batch_from_json

    with _catalogue() as cat:
        for f in files:
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
            except OSError as err:
                raise ParseError(f"cannot read: {err.strerror}", adapter="push", path=f) from err
            except json.JSONDecodeError as err:
                raise ParseError(err.msg, adapter="push", path=f, line=err.lineno) from err
            try:
                batch = batch_from_json(doc)
            except ValidationError as err:
                raise ParseError(str(err), adapter="push", path=f) from err
            receipt = cat.ingest(batch)
            if as_json:
                typer.echo(json.dumps({"file": str(f), "records": receipt.records, "tables": receipt.tables, "new": receipt.new,
                                       "rejected": [r.__dict__ if hasattr(r, "__dict__") else {"key": r.key, "value": repr(r.value), "reason": r.reason}
                                                    for r in receipt.rejected],
                                       "delivered": receipt.delivered.delivered}, default=str))
            else:
                console.print(f"[bold]{escape(str(f))}[/]", highlight=False)
                report_ingest(receipt)


def show(
    subject: str = typer.Argument(..., help="Subject path (facility=…/beamline=…/…) or the start of its id."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show a subject's key/values grouped by ontology category, with units and provenance."""
    with _catalogue() as cat:
        view = cat.show(subject)
        if as_json:
            typer.echo(json.dumps({"subject_id": view.subject_id, "kind": view.kind, "path": view.path, "records": view.records,
                                   "tables": [{k: t[k] for k in ("category", "columns", "n_rows")} for t in view.tables],
                                   "children": [{"subject_id": c[0], "kind": c[1], "path": c[2]} for c in view.children]}, indent=2, default=str))
            return
        console.print(f"[bold]{escape(view.path)}[/]  ({view.kind}, id {view.subject_id[:12]})", highlight=False)
        for category, recs in view.records.items():
            t = Table(title=category, title_justify="left", show_edge=False)
            for col in ("key", "value", "unit", "program", "run", "source"):
                t.add_column(col)
            for r in recs:
                v = r["value"]
                t.add_row(r["key"].split(".", 1)[1], f"{v:g}" if isinstance(v, float) else str(v), "" if r["unit"] in (None, "none") else r["unit"],
                          " ".join(x for x in (r["program"], r["version"]) if x), r["run"] or "", Path(r["source"]).name if r["source"] else "")
            console.print(t)
        for tab in view.tables:
            console.print(f"table {tab['category']}: {tab['n_rows']} rows × {len(tab['columns'])} columns ({', '.join(tab['columns'][:8])})",
                          highlight=False)
        for c in view.children:
            console.print(f"  └ {c[1]}: {escape(c[2])}", highlight=False)


def query(
    expression: str = typer.Argument("", help="Filter, e.g. 'reflns.d_resolution_high < 2.0 and reflns.pdbx_CC_half > 0.9'."),
    beamline: str = typer.Option(None, help="Only subjects of this beamline."),
    proposal: str = typer.Option(None, help="Only subjects of this proposal."),
    session: str = typer.Option(None, help="Only subjects of this session."),
    kind: str = typer.Option(None, help="Only subjects of this kind (dataset, processing, ...)."),
    limit: int = typer.Option(1000, help="At most this many subjects."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Find subjects whose records satisfy a filter expression."""
    with _catalogue() as cat:
        hits = cat.query(expression, limit=limit, beamline=beamline, proposal=proposal, session=session, kind=kind)
        if as_json:
            typer.echo(json.dumps(hits, indent=2))
            return
        for h in hits:
            console.print(f"{h['subject_id'][:12]}  {h['kind']:<11} {escape(h['path'])}", highlight=False)
        console.print(f"{len(hits)} subject(s)", highlight=False)


def deliver(
    once: bool = typer.Option(False, "--once", help="Deliver what can be delivered now, then exit."),
    timeout: float = typer.Option(None, help="Stop after this many seconds."),
) -> None:
    """Deliver the outbox to the configured sinks (until interrupted, or once)."""
    with _catalogue() as cat:
        if once:
            stats = cat.deliver(timeout=timeout)
            console.print(f"delivered {stats.delivered}, dead {stats.dead}, waiting {stats.retried}", highlight=False)
            return
        stop = threading.Event()
        if timeout:
            threading.Timer(timeout, stop.set).start()
        console.print(f"delivering to {', '.join(cat.sink_names)}; Ctrl-C to stop", highlight=False)
        cat.start_delivery()
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            cat.stop_delivery()


@outbox_app.command("status")
def outbox_status(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Deliveries per sink and state, with the age of the oldest waiting envelope."""
    with _catalogue() as cat:
        rows = cat.outbox.status()
        counts = cat.outbox.counts()
        if as_json:
            typer.echo(json.dumps({"entries": counts["entries"], "rejections": counts["rejections"],
                                   "deliveries": [r.__dict__ if hasattr(r, "__dict__") else
                                                  {"sink": r.sink, "state": r.state, "count": r.count, "oldest": r.oldest} for r in rows]}))
            return
        t = Table("sink", "state", "count", "oldest")
        now = time.time()
        for r in rows:
            t.add_row(r.sink, r.state, str(r.count), _age(now - r.oldest) if r.oldest and r.state != "DONE" else "")
        console.print(t)
        console.print(f"{counts['entries']} envelope(s) in {cat.outbox.path}; {counts['rejections']} rejected value(s) recorded", highlight=False)
        for sink, eid, _payload, err in cat.outbox.dead_letters(limit=5):
            console.print(f"  [red]dead[/] {sink} {eid[:12]}: {escape(err or '')}", highlight=False)


def _age(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n:
            return f"{seconds / n:.1f} {unit}"
    return f"{seconds:.0f} s"


@outbox_app.command("retry")
def outbox_retry(
    sink: str = typer.Option(None, help="Only this sink."),
    dead: bool = typer.Option(False, "--dead", help="Also bring dead letters back to PENDING."),
) -> None:
    """Make waiting envelopes deliverable now (and dead ones, with --dead)."""
    with _catalogue() as cat:
        n = cat.outbox.retry(sink, dead=dead)
        console.print(f"{n} delivery(ies) set to PENDING", highlight=False)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$")


def parse_duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 30d, 12h, 90min)", key="--done-older-than")
    n = float(m.group(1))
    return n * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800, None: 86400}[m.group(2)]


@outbox_app.command("purge")
def outbox_purge(done_older_than: str = typer.Option(..., "--done-older-than", help="Age such as 7d, 12h or 30min.")) -> None:
    """Delete envelopes that every sink has stored (DONE) longer ago than the given age."""
    seconds = parse_duration(done_older_than)
    with _catalogue() as cat:
        n = cat.outbox.purge(seconds)
        console.print(f"purged {n} envelope(s)", highlight=False)


@outbox_app.command("rejections")
def outbox_rejections(limit: int = typer.Option(20, help="How many, newest first.")) -> None:
    """Values rejected at ingest, with their reasons."""
    with _catalogue() as cat:
        for at, subject, key, value, reason, source in cat.outbox.rejections(limit):
            console.print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))} {escape(key)} = {escape(str(value))}: "
                          f"{escape(reason)} [{escape(source or subject or '')}]", highlight=False)


@config_app.command("check")
def config_check() -> None:
    """Validate the configuration and try to open every sink."""
    from mxcat.cli import state
    from mxcat.client import Catalogue
    from mxcat.config import load_config

    cfg = load_config(state.config)
    console.print(f"configuration {cfg.source or '(defaults)'}: valid", highlight=False)
    with Catalogue(cfg) as cat:
        bad = 0
        for name in cat.sink_names:
            h = cat.sink(name).health()
            bad += not h.ok
            console.print(f"  sink {name}: {'[green]ok[/]' if h.ok else '[red]unreachable[/]'} {escape(h.detail)}", highlight=False)
        console.print(f"  outbox {cat.outbox.path}: ok", highlight=False)
    if bad:
        raise typer.Exit(1)


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (defaults filled in, secrets masked)."""
    import yaml

    from mxcat.cli import state
    from mxcat.config import load_config, masked

    cfg = load_config(state.config).resolved()
    typer.echo(f"# source: {cfg.source or 'defaults and environment'}")
    typer.echo(yaml.safe_dump(masked(cfg), sort_keys=False))
