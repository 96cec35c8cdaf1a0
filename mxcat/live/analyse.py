"""Analyse detector files frame by frame: sources → kernels → per-frame statistics and spot lists.

The one-process path behind ``mxcat analyse``: the series constants are built once from the
source's :class:`~mxcat.live.frames.SeriesInfo` (geometry-free when the file has none, with one
warning), then every frame goes through spot finding and the DIALS-style statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mxcat.live.frames import Frame, SeriesEnd, SeriesInfo

log = logging.getLogger(__name__)


def open_source(paths: Sequence[str | Path], *, geometry: str | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """An HDF5 or CBF replay source for *paths* (one HDF5 file, or CBF files)."""
    from mxcat.live.sources.files import CbfSource, Hdf5Source

    ps = [Path(p) for p in paths]
    with open(ps[0], "rb") as f:
        magic = f.read(8)
    if magic.startswith(b"\x89HDF"):
        if len(ps) != 1:
            raise ValueError("give one HDF5 master or data file at a time")
        return Hdf5Source(ps[0], geometry=geometry, overrides=overrides)
    return CbfSource(ps, geometry=geometry, overrides=overrides)


def analyse(source: Any, *, hit_min_spots: int = 30, method: str = "radial") -> Iterator[dict[str, Any]]:
    """Per-frame results (statistics and spots) for every frame of *source* (spot finding by
    *method*, see :data:`mxcat.live.kernels.METHODS`)."""
    from mxcat.live.kernels import SeriesConstants, analyse_frame, make_workspace

    workspace = make_workspace(method)
    constants = None
    info: SeriesInfo | None = None
    for item in source:
        if isinstance(item, SeriesInfo):
            info = item  # a source without geometry has said so once; kernels then work around the frame centre
            constants = None
        elif isinstance(item, Frame):
            if constants is None:
                if info is None or info.shape is None:
                    info = SeriesInfo(series_id=item.series_id, protocol="file", shape=item.data.shape)
                constants = SeriesConstants.from_series(info)
            spots, stats, _ = analyse_frame(item.data, constants=constants, method=method, workspace=workspace,
                                            saturation_value=info.saturation_value if info else None,
                                            hit_min_spots=hit_min_spots)
            yield {
                "series": item.series_id,
                "image": item.index,
                "stats": {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, int)) else v)
                          for k, v in vars(stats).items() if k != "ice_ring_scores"},
                "spots": {"x": spots.x.tolist(), "y": spots.y.tolist(), "intensity": spots.intensity.tolist(),
                          "n_pixels": spots.n_pixels.tolist(),
                          "d": [None if d != d else float(d) for d in spots.d.tolist()]},
            }
        elif isinstance(item, SeriesEnd):
            if item.n_malformed:
                log.warning("series %s: %d frame(s) could not be read", item.series_id, item.n_malformed)
