"""Live results as mxcat records: one :class:`~mxcat.records.Batch` per finished series.

The batch is attached to the dataset subject (the caller's facility/beamline/proposal/session/
dataset; without a dataset name, ``series_<id>``). It carries the ``_mmcat_live_summary`` scalars,
``_pdbx_serial_crystallography_data_reduction.frames_total``/``frame_hits`` (only when > 0, as
PDBx requires; the dictionary files them under a processing subject, so they go to the child
``processing=live_<series id>`` of the dataset), and the tables ``mmcat_live_image`` (one row per analysed frame),
``mmcat_live_radial_profile`` (the series-averaged profile, non-empty bins) and
``mmcat_live_spot_separation`` (summed nearest-neighbour histogram). Values that were not computed
(None) are left out, never sent as zeros.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mxcat.live.collector import SeriesSummary
from mxcat.records import Batch, Provenance, Subject

__all__ = ["DEFAULT_SUBJECT", "IMAGE_COLUMNS", "ingest_series", "series_batch", "series_subject"]

DEFAULT_SUBJECT = {"facility": "local", "beamline": "live"}

IMAGE_COLUMNS = ("n_spots_total", "n_spots_no_ice", "n_spots_4A", "total_intensity", "estimated_d_min",
                 "d_min_distl_method_1", "d_min_distl_method_2", "noisiness_method_1", "noisiness_method_2",
                 "background", "saturated_fraction", "ice_ring_score", "peak_resolution")
"""Per-frame result fields that are ``_mmcat_live_image`` items of the same name."""


def series_subject(summary: SeriesSummary, subject: Subject | Mapping[str, Any] | None = None) -> Subject:
    """The dataset subject of a series (defaults: facility ``local``, beamline ``live``, dataset ``series_<id>``)."""
    if isinstance(subject, Subject):
        levels = subject.to_dict()
    else:
        levels = {**DEFAULT_SUBJECT, **{k: v for k, v in dict(subject or {}).items() if v is not None}}
    levels = {k: v for k, v in levels.items() if v is not None and k not in ("id", "kind", "path")}
    if not levels.get("dataset"):
        levels["dataset"] = f"series_{summary.series_id}".replace("/", "_")
    return Subject.from_dict(levels)


def _finite(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and not math.isfinite(v))


def series_batch(summary: SeriesSummary, subject: Subject | Mapping[str, Any] | None = None, *,
                 run: str | None = None, engine: str | None = None) -> Batch:
    """The batch of one finished series (see the module docstring)."""
    from mxcat import __version__ as version

    subj = series_subject(summary, subject)
    prov = Provenance(run=run or f"live-{summary.series_id}", program="mxcat live", version=version,
                      source=(summary.info or {}).get("protocol"))
    b = Batch(subj, prov)
    s = "mmcat_live_summary."
    scalars: dict[str, Any] = {
        "n_frames": summary.n_frames,
        "n_frames_expected": summary.n_expected,
        "n_frames_missing": summary.n_missing,
        "n_frames_dropped": summary.n_dropped,
        "n_frames_malformed": summary.n_malformed,
        "n_hits": summary.n_hits,
        "hit_rate": summary.hit_rate,
        "spot_count_mean": summary.spot_count_mean,
        "spot_count_median": summary.spot_count_median,
        "spot_count_max": summary.spot_count_max,
        "spot_count_hits_mean": summary.spot_count_hits_mean,
        "resolution_estimate": summary.resolution_estimate,
        "resolution_best": summary.resolution_best,
        "ice_ring_score_mean": summary.ice_ring_score_mean,
        "saturated_fraction_max": summary.saturated_fraction_max,
        "background_mean": summary.background_mean,
        "multiple_lattice_score": summary.multiple_lattice_score,
        "frame_rate": summary.frame_rate,
        "lag": summary.lag,
        "engine": engine or f"mxcat live {version}",
    }
    if summary.decay is not None:
        scalars["decay_warning"] = "yes" if summary.decay.warning else "no"
        scalars["decay_spot_slope"] = summary.decay.spot_slope_percent
        scalars["decay_resolution_slope"] = summary.decay.resolution_slope
    for k, v in scalars.items():
        if _finite(v):
            b.add(s + k, v)
    proc = subj.child(processing=f"live_{summary.series_id}".replace("/", "_"))
    if summary.n_frames > 0:
        b.add("pdbx_serial_crystallography_data_reduction.frames_total", summary.n_frames, subject=proc)
    if summary.n_hits > 0:
        b.add("pdbx_serial_crystallography_data_reduction.frame_hits", summary.n_hits, subject=proc)
    rows = []
    for r in summary.rows:
        row: dict[str, Any] = {"image_number": int(r["image_number"]), "hit": 1 if r["hit"] else 0}
        for c in IMAGE_COLUMNS:
            if _finite(r.get(c)):
                row[c] = r[c]
        rows.append(row)
    if rows:
        b.add_table("mmcat_live_image", rows)
    if summary.radial_sums is not None and summary.radial_edges is not None:
        n = np.asarray(summary.radial_n_pixels)
        mean = np.where(n > 0, summary.radial_sums / np.maximum(n, 1), np.nan)
        centres = 0.5 * (summary.radial_edges[1:] + summary.radial_edges[:-1])
        prof = []
        for k in range(len(n)):
            if n[k] <= 0 or not math.isfinite(mean[k]):
                continue
            row = {"bin": k + 1, "mean_intensity": float(mean[k]), "n_pixels": int(n[k])}
            if summary.radial_axis == "dstar2" and centres[k] > 0:
                row["d_star_sq"] = float(centres[k])
                row["d_spacing"] = float(1.0 / math.sqrt(centres[k]))
            prof.append(row)
        if prof:
            b.add_table("mmcat_live_radial_profile", prof)
    if summary.separation_counts is not None and summary.separation_edges is not None:
        e = summary.separation_edges
        sep = [{"bin": k + 1, "separation_low": float(e[k]), "separation_high": float(e[k + 1]), "count": int(c)}
               for k, c in enumerate(summary.separation_counts)]
        if sep:
            b.add_table("mmcat_live_spot_separation", sep)
    return b


def ingest_series(catalogue: Any, summary: SeriesSummary, *, subject: Subject | Mapping[str, Any] | None = None,
                  run: str | None = None, deliver_timeout: float | None = 5.0) -> Any:
    """Ingest the batch of ``summary`` through a :class:`mxcat.client.Catalogue`; its receipt."""
    return catalogue.ingest(series_batch(summary, subject, run=run), deliver_timeout=deliver_timeout)
