"""``mxcat demo``: the main job on the embedded default, end to end, with a readable summary.

At this stage of the project the demo loads mmCAT, lints it, and resolves and validates a bundled
example of processing results written with ISPyB column names (both Diamond and ESRF spellings),
showing how each name maps onto a canonical key and unit. Later stages add the simulated detector
stream, the live engine, the adapters and the embedded catalogue.
"""

from __future__ import annotations

import json
import time
from importlib import resources

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mxcat.errors import MxcatError
from mxcat.ontology import load
from mxcat.ontology.lint import lint

console = Console()


def demo() -> None:
    """Run the main job on bundled examples and print a summary."""
    t0 = time.perf_counter()
    onto = load()
    t_load = time.perf_counter() - t0
    console.rule("[bold]mxcat demo")
    console.print(f"mmCAT: {len(onto.items)} items, {len(list(onto.keys()))} keys, "
                  f"{sum(1 for _ in onto.mappings())} mappings, loaded in {t_load * 1000:.0f} ms", highlight=False)
    report = lint(require_ddl=False)
    ddl = f"DDL2 against {report.ddl}" if report.ddl else "DDL2 skipped (mmcif_ddl.dic not installed)"
    console.print(f"lint: {'ok' if report.ok else f'{len(report.errors)} error(s)'} ({ddl})", highlight=False)

    example = json.loads((resources.files("mxcat") / "examples" / "ispyb_results.json").read_text(encoding="utf-8"))
    table = Table("from", "to (canonical key = value)", title=example["title"], show_lines=False)
    accepted = rejected = 0
    for row in example["values"]:
        sel = row.get("row")
        source = escape(f"{row.get('scheme', '')}: {row['name']}" + (f" [{sel.split('=', 1)[-1]}]" if sel else ""))
        try:
            mapping = onto.resolve_mapping(row["name"], scheme=row.get("scheme"), selector=sel)
            n = onto.validate(mapping.key, row["value"], mapping.units)
            unit = "" if n.unit in (None, "none") else f" {n.unit}"
            value = f"{n.value:g}" if isinstance(n.value, float) else str(n.value)
            note = "; ".join(n.warnings) or (f"converted from {row['value']} {mapping.units}" if mapping.units else "")
            table.add_row(source, f"{n.key} = {value}{unit}" + (f"\n[dim]{note}[/]" if note else ""))
            accepted += 1
        except MxcatError as err:
            table.add_row(source, f"[red]rejected:[/] {err}")
            rejected += 1
    console.print(table)
    console.print(f"{accepted} value(s) accepted, {rejected} rejected with a reason; "
                  f"total {time.perf_counter() - t0:.2f} s", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
