"""``mxcat icat …``: ICAT housekeeping for a configured ``icat`` sink (ParameterTypes from the ontology)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mxcat.errors import ConfigError

console = Console()
app = typer.Typer(help="ICAT housekeeping for a configured icat sink.", no_args_is_help=True)


@app.callback()
def _icat() -> None:
    """ICAT housekeeping for a configured icat sink."""


def open_icat_sink(name: str | None) -> Any:
    """The configured sink *name* (default: the first enabled sink of type icat), created from the configuration."""
    from mxcat.cli import state
    from mxcat.config import load_config
    from mxcat.sinks import create

    cfg = load_config(state.config)
    icat = [n for n, s in cfg.sinks.items() if s.type == "icat" and (s.enabled or n == name)]
    if name is None:
        if not icat:
            raise ConfigError("no sink of type icat is configured", key="sinks", path=cfg.source)
        name = icat[0]
    sc = cfg.sinks.get(name)
    if sc is None or sc.type != "icat":
        raise ConfigError(f"no sink of type icat named {name!r}; icat sinks: {', '.join(icat) or 'none'}", key="sinks", path=cfg.source)
    return create(name, sc.type, sc.options, source=cfg.source)


@app.command("sync-parameter-types")
def sync_parameter_types(
    sink: str = typer.Option(None, "--sink", help="A configured sink of type icat (default: the first one)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be created; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Create the ParameterTypes of the mmCAT export that ICAT lacks; report conflicts (same name, other units) untouched.

    Exits 1 when there are conflicts, so that a scheduled run gets noticed.
    """
    s = open_icat_sink(sink)
    try:
        report = s.sync_parameter_types(dry_run=dry_run)
    finally:
        s.close()
    if as_json:
        typer.echo(json.dumps({"sink": s.name, "dry_run": report.dry_run, "created": report.created, "existing": report.existing,
                               "conflicts": [asdict(c) for c in report.conflicts]}, indent=2))
    else:
        verb = "would create" if dry_run else "created"
        console.print(f"sink {escape(s.name)} (facility {escape(s.facility)}, names {s.names}): {verb} {len(report.created)}, "
                      f"already there {len(report.existing)}, conflicts {len(report.conflicts)}", highlight=False, soft_wrap=True)
        for n in report.created[:20]:
            console.print(f"  [green]{verb}[/] {escape(n)}", highlight=False)
        if len(report.created) > 20:
            console.print(f"  … and {len(report.created) - 20} more", highlight=False)
        if report.conflicts:
            t = Table(title="conflicts (left unchanged)", title_justify="left", show_edge=False)
            for col in ("name", "mxcat units", "ICAT units", "reason"):
                t.add_column(col)
            for c in report.conflicts:
                t.add_row(escape(c.name), escape(c.units), escape(c.icat_units), escape(c.reason))
            console.print(t)
    if report.conflicts:
        raise typer.Exit(1)
