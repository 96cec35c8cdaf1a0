"""``mxcat demo``: the main job on the embedded default, end to end, with a readable summary.

At this stage of the project the demo loads and lints mmCAT, then ingests a bundled example of
processing results written with ISPyB and ESRF ICAT names (both Diamond and ESRF spellings)
through validation and the durable outbox into an embedded catalogue, queries it, and shows the
stored subject. Later stages add the simulated detector stream, the live engine and the adapters
for real program outputs. The catalogue lives in a temporary directory unless ``--data-dir`` says
where to keep it.
"""

from __future__ import annotations

import json
import tempfile
import time
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mxcat.config import Config, SinkConfig
from mxcat.ontology import load
from mxcat.ontology.lint import lint
from mxcat.records import Batch, Provenance, Subject

console = Console()


def demo(
    data_dir: Path = typer.Option(None, "--data-dir", help="Keep the demo's outbox and catalogue here (default: a temporary directory)."),
) -> None:
    """Run the main job on bundled examples and print a summary."""
    from mxcat.client import Catalogue

    t0 = time.perf_counter()
    onto = load()
    t_load = time.perf_counter() - t0
    console.rule("[bold]mxcat demo")
    console.print(f"mmCAT: {len(onto.items)} items, {len(list(onto.keys()))} keys, "
                  f"{sum(1 for _ in onto.mappings())} mappings, loaded in {t_load * 1000:.0f} ms", highlight=False)
    report = lint(require_ddl=False)
    ddl = f"DDL2 against {report.ddl}" if report.ddl else "DDL2 skipped (mmcif_ddl.dic not installed)"
    console.print(f"lint: {'ok' if report.ok else f'{len(report.errors)} error(s)'} ({ddl})", highlight=False)

    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mxcat-demo-")
        data_dir = Path(tmp.name)
    cfg = Config(version=1, outbox={"path": data_dir / "outbox.sqlite"},
                 sinks={"embedded": SinkConfig(type="embedded", options={"path": str(data_dir / "catalogue.sqlite")})})
    example = json.loads((resources.files("mxcat") / "examples" / "ispyb_results.json").read_text(encoding="utf-8"))
    dataset = Subject(**example["subject"])
    processing = dataset.child(processing=example["processing"])
    batch = Batch(processing, Provenance(run=example["run"], program=example["program"], adapter="demo",
                                         source="mxcat/examples/ispyb_results.json"))
    for row in example["values"]:
        batch.add(row["name"], row["value"], scheme=row.get("scheme"), selector=row.get("row"))

    with Catalogue(cfg, onto) as cat:
        receipt = cat.ingest(batch)
        again = cat.ingest(batch)
        console.print(f"ingest: {receipt.records} values stored in the outbox and delivered "
                      f"({receipt.delivered.delivered} to the embedded catalogue), {len(receipt.rejected)} rejected; "
                      f"ingesting the same input again stored {again.new + again.changed} new values", highlight=False)
        for r in receipt.rejected:
            console.print(f"  [red]rejected[/] {escape(str(r))}", highlight=False)
        for key, w in receipt.warnings:
            console.print(f"  [yellow]warning[/] {escape(key)}: {escape(w)}", highlight=False)

        q = "reflns.d_resolution_high < 2.0 and reflns_shell.outer.pdbx_CC_half > 0.3"
        hits = cat.query(q)
        console.print(f"query [cyan]{escape(q)}[/]: {len(hits)} subject(s)", highlight=False)
        for h in hits:
            console.print(f"  {escape(h['path'])}", highlight=False)

        for subject in (dataset, processing):
            view = cat.show(subject)
            table = Table(title=f"{view.kind}: {view.path.split('/')[-1]}", title_justify="left")
            table.add_column("key")
            table.add_column("value", justify="right")
            table.add_column("unit")
            for recs in view.records.values():
                for r in recs:
                    v = r["value"]
                    table.add_row(r["key"], f"{v:g}" if isinstance(v, float) else str(v), "" if r["unit"] in (None, "none") else r["unit"])
            console.print(table)
        status = {s.state: s.count for s in cat.outbox.status()}
        console.print(f"outbox: {status}; catalogue: {cat.sink('embedded').count()} in {data_dir}"
                      + (" (temporary)" if tmp else ""), highlight=False)
    if tmp is not None:
        tmp.cleanup()
    console.print(f"done in {time.perf_counter() - t0:.2f} s", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
