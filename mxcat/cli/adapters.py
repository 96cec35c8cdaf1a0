"""``mxcat ingest``, ``mxcat parse`` and ``mxcat adapters list|explain``: files in, records out."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
adapters_app = typer.Typer(help="The ingest adapters: which exist, and which claims a file.", no_args_is_help=True)


@adapters_app.command("list")
def adapters_list() -> None:
    """Every registered adapter with what it reads."""
    from mxcat.adapters import BROKEN, registry

    t = Table("adapter", "reads")
    for name, a in sorted(registry().items()):
        t.add_row(name, a.description)
    console.print(t)
    for name, err in sorted(BROKEN.items()):
        console.print(f"[red]{name}: failed to load: {escape(err)}[/]", highlight=False)


@adapters_app.command("explain")
def adapters_explain(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The file to look at.")) -> None:
    """Every adapter's verdict on a file, and any error a detector raised."""
    from mxcat.adapters import explain

    verdicts = explain(file)
    for v in verdicts:
        mark = "[green]claims[/]" if v.claims else "[dim]no[/]"
        console.print(f"{v.adapter:<18} {mark}" + (f"  [red]detector error: {escape(v.error)}[/]" if v.error else ""), highlight=False)
    n = sum(v.claims for v in verdicts)
    console.print("no adapter claims it" if n == 0 else "one adapter claims it" if n == 1 else f"[red]{n} adapters claim it[/]", highlight=False)


def parse_cmd(
    file: Path = typer.Argument(..., help="The file to parse."),
    adapter: str = typer.Option(None, help="Use this adapter instead of detection."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show what would be stored from a file, without storing anything."""
    from mxcat.adapters import claim, registry
    from mxcat.errors import ParseError

    regs = registry()
    if adapter is not None and adapter not in regs:
        raise ParseError(f"unknown adapter {adapter!r}; known: {', '.join(sorted(regs))}", path=file)
    chosen = regs[adapter] if adapter else claim(file, regs)
    if chosen is None:
        raise ParseError("no adapter claims this file (see mxcat adapters explain)", path=file)
    parsed = chosen.parse(file)
    if as_json:
        typer.echo(json.dumps(parsed.to_dict(), indent=2, default=str))
        return
    console.print(f"[bold]{escape(str(file))}[/]: {parsed.adapter}, {parsed.program or '?'} {parsed.version or ''}", highlight=False)
    for note in parsed.notes:
        console.print(f"  note: {escape(note)}", highlight=False)
    for r in parsed.results:
        console.print(f"  result {r.label or ''} ({r.level}): {len(r.values)} values, {len(r.tables)} table(s)", highlight=False)
        for o in r.values:
            extra = f" [{o.scheme} {o.selector or ''}]" if o.scheme else ""
            console.print(f"    {escape(o.key)} = {escape(str(o.value))}{' ' + o.unit if o.unit else ''}{escape(extra)}", highlight=False)
        for cat, rows in r.tables:
            console.print(f"    table {cat}: {len(rows)} rows", highlight=False)


def ingest(
    paths: list[str] = typer.Argument(..., help="Files, directories (searched recursively) or glob patterns."),
    facility: str = typer.Option(None, help="Facility of the subjects (default: configuration)."),
    beamline: str = typer.Option(None, help="Beamline (default: configuration)."),
    proposal: str = typer.Option(None, help="Proposal."),
    session: str = typer.Option(None, help="Session (visit)."),
    sample: str = typer.Option(None, help="Sample."),
    dataset: str = typer.Option(None, help="Dataset (default: what the file says, else the file name)."),
    adapter: str = typer.Option(None, help="Use this adapter for every file instead of detection."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Parse and validate, but store nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    sink: list[str] = typer.Option(None, "--sink", help="Deliver to this configured sink (name, or a type such as "
                                   "icat, icatplus, scicat) instead of the enabled ones; repeatable."),
) -> None:
    """Ingest program outputs: detect, parse, validate, store durably, deliver; then summarise."""
    from mxcat.adapters import expand, registry
    from mxcat.cli import state
    from mxcat.client import Catalogue
    from mxcat.ingest_files import Context, read_file

    files = list(expand(paths))
    regs = registry()
    with Catalogue.open(state.config) as cat:
        if sink:
            cat.use_sinks(list(sink))
        ctx = Context(facility or cat.config.facility, beamline or cat.config.beamline, proposal, session, sample, dataset)
        per_adapter: Counter[str] = Counter()
        stored = rejected = unchanged = 0
        errors: list[str] = []
        unclaimed: list[Path] = []
        rejections: list[str] = []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True, disable=len(files) < 5 or as_json) as progress:
            task = progress.add_task("ingesting", total=len(files))
            for f in files:
                out = read_file(f, ctx, regs, adapter=adapter)
                progress.advance(task)
                if out.error is not None:
                    errors.append(str(out.error))
                    continue
                if out.adapter is None:
                    unclaimed.append(f)
                    continue
                per_adapter[out.adapter] += 1
                if out.dropped:
                    rejected += len(out.dropped)
                    rejections += [f"{f}: {r}" for r in out.dropped]
                    if not dry_run:
                        cat.outbox.record_rejections(out.dropped)
                for b in out.batches:
                    if dry_run:
                        prep = cat.prepare(b)
                        stored += len(prep.records) + len(prep.tables)
                        rejected += len(prep.rejected)
                        rejections += [f"{f}: {r}" for r in prep.rejected]
                        continue
                    receipt = cat.ingest(b, deliver_timeout=None)
                    stored += receipt.new + receipt.changed
                    unchanged += receipt.unchanged
                    rejected += len(receipt.rejected)
                    rejections += [f"{f}: {r}" for r in receipt.rejected]
        delivered = cat.deliver(timeout=30) if not dry_run else None
        summary = {
            "files": len(files), "by_adapter": dict(per_adapter), "unclaimed": [str(p) for p in unclaimed],
            "errors": errors, "stored": stored, "unchanged": unchanged, "rejected": rejected, "rejections": rejections,
            "sinks": cat.sink_names, "delivered": delivered.delivered if delivered else 0, "waiting": delivered.retried if delivered else 0, "dry_run": dry_run,
        }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        verb = "would store" if dry_run else "stored"
        console.print(f"{len(files)} file(s): " + ", ".join(f"{n} {a}" for a, n in sorted(per_adapter.items()))
                      + (f"; {len(unclaimed)} not claimed" if unclaimed else "") + (f"; {len(errors)} failed" if errors else ""), highlight=False)
        console.print(f"{verb} {stored} value(s)/table(s), {unchanged} unchanged, {rejected} rejected"
                      + ("" if dry_run else f"; delivered {summary['delivered']}, waiting {summary['waiting']}"), highlight=False)
        for e in errors:
            console.print(f"  [red]error[/] {escape(e)}", highlight=False)
        for r in rejections[:20]:
            console.print(f"  [yellow]rejected[/] {escape(r)}", highlight=False)
        if len(rejections) > 20:
            console.print(f"  ... and {len(rejections) - 20} more (mxcat outbox rejections)", highlight=False)
    if errors:
        raise typer.Exit(5)


def analyse_cmd(
    files: list[Path] = typer.Argument(..., help="One HDF5 (NXmx master or DECTRIS data file) or CBF files."),
    geometry: Path = typer.Option(None, help="A CrystFEL .geom to use instead of the file's own geometry."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per frame (statistics and the spot list)."),
    method: str = typer.Option("radial", help="Spot finding: radial (peakfinder8-style, fast) or dispersion (DIALS)"),
) -> None:
    """Per-frame statistics and spot lists (x, y in pixels) of detector files."""
    from mxcat.errors import ParseError
    from mxcat.live.analyse import analyse, open_source
    from mxcat.live.kernels import METHODS

    if method not in METHODS:
        raise typer.BadParameter(f"{method!r}: choose one of {', '.join(METHODS)}", param_hint="--method")

    try:
        source = open_source([str(f) for f in files], geometry=str(geometry) if geometry else None)
        rows = analyse(source, method=method)
        for r in rows:
            if as_json:
                typer.echo(json.dumps(r))
            else:
                s = r["stats"]
                res = s.get("estimated_d_min")
                console.print(f"{r['series']} #{r['image']}: {s['n_spots_total']} spots ({s['n_spots_no_ice']} outside ice), "
                              f"hit {'yes' if s['hit'] else 'no'}, resolution {f'{res:.2f} A' if res not in (None, -1) else '-'}, "
                              f"background {s['background']:.1f}", highlight=False)
    except (OSError, ValueError) as err:
        raise ParseError(str(err), adapter="analyse", path=files[0]) from err


def simulate_cmd(
    endpoint: str = typer.Argument("tcp://*:9999", help="ZeroMQ endpoint to bind the PUSH socket to."),
    protocol: str = typer.Option("eiger1", help="eiger1 or eiger2."),
    n_images: int = typer.Option(100, help="Images per series."),
    rate: float = typer.Option(None, help="Frames per second (default: as fast as possible)."),
    encoding: str = typer.Option("bs32-lz4<", help="bs32-lz4<, bs16-lz4<, bs8-lz4<, lz4< or raw."),
    seed: int = typer.Option(0, help="Random seed of the synthetic frames."),
) -> None:
    """Stream synthetic Eiger frames with known spots (Stream V1 or V2) for testing the live engine."""
    from mxcat.live.simulate import main as sim_main

    args = [endpoint, "--protocol", protocol, "--n-images", str(n_images), "--encoding", encoding, "--seed", str(seed)]
    if rate:
        args += ["--rate", str(rate)]
    raise typer.Exit(sim_main(args))
