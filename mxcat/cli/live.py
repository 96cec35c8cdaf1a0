"""``mxcat live``: analyse a detector stream with N worker processes (see :mod:`mxcat.live.runner`).

Prints one status line per second and each finished series; with ``--catalogue`` every finished
series is ingested (records for the dataset subject given by the level options).
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

__all__ = ["live"]


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def live(
    source: str = typer.Option(..., help="Detector endpoint, e.g. tcp://dcu:9999"),
    protocol: str = typer.Option("eiger1", help="eiger1, eiger2 or msgpack"),
    workers: int = typer.Option(2, help="Worker processes"),
    method: str = typer.Option("radial", help="Spot finding: radial (peakfinder8-style, fast) or dispersion (DIALS)"),
    facility: str = typer.Option("local", help="Facility of the dataset subject"),
    beamline: str = typer.Option("live", help="Beamline of the dataset subject"),
    proposal: str = typer.Option(None, help="Proposal of the dataset subject"),
    session: str = typer.Option(None, help="Session (visit) of the dataset subject"),
    dataset: str = typer.Option(None, help="Dataset name (default: series_<id>)"),
    feed: str = typer.Option(None, help="PUB endpoint to bind for viewers (msgpack), e.g. tcp://*:5556"),
    catalogue: bool = typer.Option(False, "--catalogue/--no-catalogue", help="Ingest each finished series"),
    queue_size: int = typer.Option(16, help="Frames queued per worker before the oldest is dropped"),
    max_series: int = typer.Option(None, help="Stop after this many series"),
    timeout: float = typer.Option(None, help="Stop after this many seconds"),
    hits: str = typer.Option(None, "--hits", help="REP endpoint to bind serving hit frames to CrystFEL "
                             "(indexamajig --zmq-input=... --zmq-request=next --data-format=msgpack), e.g. tcp://*:5557"),
    hits_buffer: int = typer.Option(16, help="Hit frames buffered for --hits before the oldest is dropped"),
    hits_wait: float = typer.Option(10.0, help="Seconds a --hits request waits for a hit before a 'no hit' reply"),
) -> None:
    """Analyse a live detector stream: hit rate, spots, resolution, radial profile, decay."""
    from mxcat.live.kernels import METHODS
    from mxcat.live.runner import PROTOCOLS, run

    if method not in METHODS:
        raise typer.BadParameter(f"{method!r}: choose one of {', '.join(METHODS)}", param_hint="--method")
    if protocol not in PROTOCOLS:
        raise typer.BadParameter(f"{protocol!r}: choose one of {', '.join(PROTOCOLS)}", param_hint="--protocol")
    console = Console()

    def update(st: dict[str, Any]) -> None:
        s = st.get("series") or {}
        console.print(
            f"[bold]{_fmt(st['elapsed'], '.0f')} s[/] series {s.get('series', '–')}: "
            f"{s.get('n_frames', 0)}/{_fmt(s.get('n_expected'), 'd')} frames, hit rate {_fmt(s.get('hit_rate'))} % "
            f"(last {_fmt(s.get('rolling_hit_rate'))} %), spots {_fmt(s.get('rolling_spot_count'))}, "
            f"{_fmt(st['throughput'])} frames/s, lag {_fmt(s.get('lag'), '.2f')} s"
        )

    cat = None
    if catalogue:
        from mxcat.client import Catalogue

        cat = Catalogue.open()
    subject = {"facility": facility, "beamline": beamline, "proposal": proposal, "session": session, "dataset": dataset}
    try:
        summary = run(source, protocol=protocol, workers=workers, method=method, feed=feed, catalogue=cat, subject=subject,
                      max_series=max_series, timeout=timeout, queue_size=queue_size, on_update=update,
                      hits_endpoint=hits, hits_buffer=hits_buffer, hits_wait=hits_wait)
    finally:
        if cat is not None:
            cat.close()
    for s in summary.series:
        d = s.scalars()
        console.print(
            f"[bold green]series {s.series_id}[/]{'' if s.complete else ' (incomplete)'}: {s.n_frames} frames "
            f"({s.n_dropped} dropped, {_fmt(s.n_missing, 'd')} missing), {s.n_hits} hits = {_fmt(s.hit_rate)} %, "
            f"spots mean {_fmt(s.spot_count_mean)} / max {_fmt(s.spot_count_max, 'd')}, "
            f"resolution {_fmt(s.resolution_estimate, '.2f')} Å (best {_fmt(s.resolution_best, '.2f')}), "
            f"{_fmt(s.frame_rate)} frames/s, lag {_fmt(s.lag, '.2f')} s"
            + (" [bold red]DECAY WARNING[/]" if d.get("decay_warning") else "")
        )
    for r in summary.receipts:
        console.print(f"ingested {r.records} records, {r.tables} tables; {len(r.rejected)} rejected")
    if summary.hits is not None:
        h = summary.hits
        console.print(f"hits endpoint {h['endpoint']}: {h['n_received']} hits buffered, {h['n_served']} served, "
                      f"{h['n_dropped'] + h['n_dropped_workers']} dropped, {h['n_buffered']} left unserved")
    console.print(f"{summary.n_results} results in {summary.seconds:.1f} s with {summary.n_workers} workers")
