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
    frames: int = typer.Option(60, help="Frames in the simulated detector series (0 skips the live stage)."),
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
        _live_stage(cat, dataset, frames)
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
        corpus = _find_corpus()
        if corpus is not None:
            _ingest_real_files(cat, corpus, dataset)
        else:
            console.print("real program outputs: not found (set MXCAT_CORPUS to the shared corpus to ingest them)", highlight=False)
        status = {s.state: s.count for s in cat.outbox.status()}
        console.print(f"outbox: {status}; catalogue: {cat.sink('embedded').count()} in {data_dir}"
                      + (" (temporary)" if tmp else ""), highlight=False)
    if tmp is not None:
        tmp.cleanup()
    console.print(f"done in {time.perf_counter() - t0:.2f} s", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def _live_stage(cat: object, dataset: Subject, n_frames: int) -> None:
    """Simulated Eiger stream → live engine (2 worker processes) → live records in the catalogue."""
    if n_frames <= 0:
        return
    try:
        import threading

        import zmq

        from mxcat.live.runner import run
        from mxcat.live.simulate import Geometry, serve, synthetic_frame
    except ImportError as err:
        console.print(f"live stage skipped: the live engine is not installed ({err.name}); pip install 'mxcat[live]'", highlight=False)
        return
    shape = (514, 1030)
    frames, truth = [], 0
    for i in range(n_frames):
        # a rotation series whose crystal decays: fewer spots as the series goes on, every fifth frame blank
        n_spots = 0 if i % 5 == 4 else max(10, 120 - 2 * i)
        f, spots = synthetic_frame(shape=shape, dtype="<u2", seed=(11, i), n_spots=n_spots, gaps=True)
        frames.append(f)
        truth += len(spots)
    ctx = zmq.Context()
    with ctx.socket(zmq.PULL) as probe:
        port = probe.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    sent: dict[str, object] = {}

    def detector() -> None:
        sent.update(serve(endpoint, frames=frames, protocol="eiger1", rate=200.0, ctx=ctx, encoding="bs16-lz4<",
                          geometry=Geometry(distance=0.2), send_timeout=20.0))

    thread = threading.Thread(target=detector, daemon=True)
    t0 = time.perf_counter()
    summary = run(endpoint, protocol="eiger1", workers=2, max_series=1, timeout=60, ready=thread.start,
                  catalogue=cat, subject=dataset.child(dataset="live_series"), rotation=True)
    thread.join(timeout=20)
    ctx.term()
    if not summary.series:
        console.print("[red]live stage: no series finished[/]", highlight=False)
        return
    s = summary.series[0]
    res = f"{s.resolution_estimate:.2f} A" if s.resolution_estimate else "-"
    decay = "yes" if s.decay is not None and s.decay.warning else "no"
    dropped = f" ({s.n_dropped} dropped by the overload policy)" if s.n_dropped else ""
    console.print(f"live: {s.n_frames} of {n_frames} simulated Eiger frames{dropped} (Stream V1, bs16-lz4) analysed by {summary.n_workers} workers "
                  f"in {time.perf_counter() - t0:.1f} s: hit rate {s.hit_rate:.0f} %, mean spots {s.spot_count_mean:.0f} "
                  f"(true {truth / n_frames:.0f}), resolution {res}, decay warning {decay}; "
                  f"{len(summary.receipts)} series stored in the catalogue", highlight=False)


REAL_FILES = (
    "ispyb_xml/autoproc-1.1.7-20221123_esrf_2023_staraniso.xml",
    "aimless/aimless-0.7.2_soleil_P41212_splTsm_2.xml",
    "xds/CORRECT_xds-2010dec06_edna-tryp1.LP",
    "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat",
    "xia2/xia2-0.3.6.3_dls-i04-1_indexing-error_xia2.txt",
    "dials/dials_insulin_scaled.expt",
    "live_analysis/dozor-2.0.2_esrf.log",
    "crystfel/crystfel-0.9.1_lcls-cspad_xgandalf_test.stream",
    "detector/dls-i03-eiger16m_xrc_209_master.h5",
)
"""Real outputs of autoPROC, AIMLESS, XDS, xia2, DIALS, dozor, CrystFEL and a DECTRIS master file."""


def _find_corpus() -> Path | None:
    import os

    for cand in (os.environ.get("MXCAT_CORPUS"), "../shared/corpus", Path(__file__).resolve().parents[3] / "shared" / "corpus"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def _ingest_real_files(cat: object, corpus: Path, dataset: Subject) -> None:
    from mxcat.adapters import registry
    from mxcat.ingest_files import Context, read_file

    regs = registry()
    table = Table("file", "adapter", "results", "stored", "rejected", "key values", title=f"real program outputs from {corpus}",
                  title_justify="left")
    ctx = Context(facility=dataset.facility, beamline=dataset.beamline, proposal=dataset.proposal, session=dataset.session)
    for rel in REAL_FILES:
        path = corpus / rel
        if not path.is_file():
            continue
        out = read_file(path, ctx, regs)
        if out.error is not None:
            table.add_row(path.name, out.adapter or "", "", "", "", f"[red]{escape(str(out.error))}[/]")
            continue
        stored = rejected = 0
        summary: list[str] = []
        for b in out.batches:
            r = cat.ingest(b, deliver_timeout=None)  # type: ignore[attr-defined]
            stored += r.records + r.tables
            rejected += len(r.rejected)
            for rec in cat.prepare(b).records:  # type: ignore[attr-defined]
                if rec.key in ("reflns.d_resolution_high", "mmcat_processing.status", "pdbx_serial_crystallography_data_reduction.frames_indexed",
                               "mmcat_collection.number_of_images") and len(summary) < 3:
                    v = rec.value
                    summary.append(f"{rec.key.split('.')[-1]}={v:g}" if isinstance(v, float) else f"{rec.key.split('.')[-1]}={v}")
        table.add_row(path.name[:38], out.adapter or "-", str(len(out.batches)), str(stored), str(rejected + len(out.dropped)), ", ".join(summary))
    console.print(table)
    stats = cat.deliver(timeout=30)  # type: ignore[attr-defined]
    console.print(f"delivered {stats.delivered} to the embedded catalogue", highlight=False)
