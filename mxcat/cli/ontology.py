"""``mxcat ontology``: curator tools for the mmCAT dictionaries (lint, show, search, diff, export)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mxcat.ontology import load
from mxcat.ontology.model import ItemDef

app = typer.Typer(help="Lint, browse, compare and export the mmCAT dictionaries.", no_args_is_help=True)
console = Console()


@app.command()
def lint(
    files: list[Path] = typer.Argument(None, help="Dictionary files or directories (default: the shipped mmCAT)."),
    ddl: Path = typer.Option(None, help="mmcif_ddl.dic to validate against (default: $MXCAT_MMCIF_DDL or libcifpp-data)."),
    pdbx: Path = typer.Option(None, help="PDBx dictionary for the adoption checks (default: $MXCAT_PDBX_DIC or libcifpp-data)."),
    no_ddl: bool = typer.Option(False, "--no-ddl", help="Skip DDL2 conformance on purpose (house rules still run)."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Check dictionaries against DDL2 and mmCAT's house rules; exit 1 on any error."""
    from mxcat.ontology.lint import lint as run_lint

    report = run_lint(files or None, ddl=ddl, pdbx=pdbx, require_ddl=not no_ddl)
    if as_json:
        typer.echo(json.dumps({
            "ok": report.ok,
            "files": [str(f) for f in report.files],
            "ddl": str(report.ddl) if report.ddl else None,
            "pdbx": str(report.pdbx) if report.pdbx else None,
            "problems": [asdict(p) for p in report.problems],
        }, indent=2))
    else:
        for p in report.problems:
            style = "red" if p.severity == "error" else "yellow"
            console.print(f"[{style}]{p}[/]", highlight=False, soft_wrap=True)
        ddl_note = f"DDL2 {report.ddl}" if report.ddl else "DDL2 not checked"
        pdbx_note = f"PDBx {report.pdbx}" if report.pdbx else "PDBx not compared"
        verdict = "[green]ok[/]" if report.ok else f"[red]{len(report.errors)} error(s)[/]"
        console.print(f"{len(report.files)} file(s), {report.n_items} items; {ddl_note}; {pdbx_note}: {verdict}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def _item_dict(onto: Any, key: str, item: ItemDef, selector: str | None) -> dict[str, Any]:
    return {
        "key": key,
        "name": item.name,
        "selector": selector,
        "category": item.category,
        "type": item.type_code,
        "kind": item.kind,
        "units": item.units,
        "hard_range": str(item.hard_range) if item.hard_range else None,
        "advisory_range": str(item.advisory_range) if item.advisory_range else None,
        "enumeration": list(item.enumeration),
        "entity": item.entity,
        "label": item.label,
        "status": item.status,
        "replaced_by": item.replaced_by,
        "description": " ".join(item.description.split()),
        "defined_in": f"{item.path}:{item.line}",
        "mappings": [
            {"scheme": m.scheme, "target": m.target, "target_selector": m.target_selector, "selector": m.selector,
             "units": m.units, "relation": m.relation, "note": m.note}
            for m in item.mappings if selector is None or m.selector in (None, selector)
        ],
    }


@app.command()
def show(
    key: str = typer.Argument(..., help="A flat key, a DDL2 tag, or a mapped name (ISPyB column, ESRF ICAT name, NXmx path...)."),
    selector: str = typer.Option(None, help="Row condition for mapped names, e.g. scalingStatisticsType=outerShell."),
    scheme: str = typer.Option(None, help="Vocabulary of a mapped name: ispyb, ispyb_dls, esrf_icat, nxmx, dials, crystfel, mxcube."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show the definition of one key, found by any of its names."""
    onto = load()
    flat = onto.resolve(key, scheme=scheme, selector=selector)
    item, sel = onto.lookup(flat)
    d = _item_dict(onto, flat, item, sel)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    console.print(f"[bold]{flat}[/]  ({item.name}{f', row {sel}' if sel else ''})", highlight=False)
    console.print(d["description"], highlight=False)
    for label in ("type", "units", "hard_range", "advisory_range", "entity", "label", "status", "replaced_by", "defined_in"):
        if d[label]:
            console.print(f"  {label:15} {d[label]}", highlight=False)
    if d["enumeration"]:
        console.print(f"  {'values':15} {', '.join(d['enumeration'])}", highlight=False)
    if d["mappings"]:
        t = Table("scheme", "target", "row", "units", "relation", "note", show_lines=False)
        for m in d["mappings"]:
            t.add_row(m["scheme"], m["target"], m["target_selector"] or "", m["units"] or "", m["relation"], m["note"] or "")
        console.print(t)


@app.command()
def search(
    text: str = typer.Argument(..., help="Words to look for in names, labels, descriptions and mapped names."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Find items by words."""
    onto = load()
    hits = onto.search(text)
    if as_json:
        typer.echo(json.dumps([{"name": i.name, "units": i.units, "label": i.label} for i in hits], indent=2))
        return
    t = Table("item", "units", "description")
    for i in hits:
        t.add_row(i.name, i.units or "", " ".join(i.description.split())[:90])
    console.print(t)
    console.print(f"{len(hits)} item(s)")


@app.command()
def resolve(
    name: str = typer.Argument(..., help="A mapped name or key."),
    selector: str = typer.Option(None, help="Row condition, e.g. scalingStatisticsType=outerShell."),
    scheme: str = typer.Option(None, help="Vocabulary of the name."),
) -> None:
    """Print the flat mmCAT key a name maps to."""
    typer.echo(load().resolve(name, scheme=scheme, selector=selector))


@app.command("validate")
def validate_cmd(
    key: str = typer.Argument(..., help="A key or mapped name."),
    value: str = typer.Argument(..., help="The value (put -- before negative numbers)."),
    unit: str = typer.Option(None, help="Unit of the value (default: the unit the name's vocabulary uses)."),
    scheme: str = typer.Option(None, help="Vocabulary of a mapped name."),
    selector: str = typer.Option(None, help="Row condition of a mapped name, e.g. scalingStatisticsType=outerShell."),
) -> None:
    """Validate one value and print it normalised to the canonical unit."""
    onto = load()
    if scheme is None and selector is None and key.lstrip("_") in onto:
        flat, mapping_units = onto.canonical_key(key), None
    else:
        m = onto.resolve_mapping(key, scheme=scheme, selector=selector)
        flat, mapping_units = m.key, m.units
    n = onto.validate(flat, value, unit if unit is not None else mapping_units)
    typer.echo(f"{n.key} = {n.value}{' ' + n.unit if n.unit and n.unit != 'none' else ''}")
    for w in n.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


@app.command("diff")
def diff_cmd(
    old: Path = typer.Argument(..., help="Old dictionary directory (or one file)."),
    new: Path = typer.Argument(..., help="New dictionary directory (or one file)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Compare two versions; exit 1 when a change is breaking."""
    from mxcat.ontology.diff import diff

    report = diff(load([old]), load([new]))
    if as_json:
        typer.echo(json.dumps([asdict(c) for c in report.changes], indent=2))
    else:
        for c in report.changes:
            console.print(f"[{'red' if c.breaking else 'green'}]{c}[/]", highlight=False, soft_wrap=True)
        console.print(f"{len(report.changes)} change(s), {len(report.breaking)} breaking", highlight=False)
    if report.breaking:
        raise typer.Exit(1)


@app.command()
def export(
    what: str = typer.Argument(..., help="icat, scicat or docs."),
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of standard output."),
    names: str = typer.Option("mmcat", help="ICAT names: mmcat flat keys, or esrf names where mapped."),
    facility: str = typer.Option(None, help="ICAT facility name to attach to each ParameterType."),
) -> None:
    """Export ICAT ParameterTypes (JSON), a SciCat JSON Schema, or the Markdown reference."""
    from mxcat.ontology import export as ex

    onto = load()
    if what == "icat":
        text = json.dumps(ex.icat_parameter_types(onto, names=names, facility=facility), indent=2)
    elif what == "scicat":
        text = json.dumps(ex.scicat_schema(onto), indent=2)
    elif what == "docs":
        text = ex.markdown_reference(onto)
    else:
        raise typer.BadParameter(f"unknown export {what!r}: choose icat, scicat or docs")
    if output:
        output.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        console.print(f"wrote {output}", highlight=False)
    else:
        typer.echo(text)
