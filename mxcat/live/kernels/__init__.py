"""Pure per-frame kernels of the live engine (see each module for the definition it follows).

``SeriesConstants.build``/``build_without_geometry`` once per series, then per frame
:func:`analyse_frame` (spots, statistics and radial profile in one sweep) with ``method``
``"radial"`` (peakfinder8-style radial thresholds, the live default, :mod:`.radial_spots`) or
``"dispersion"`` (DIALS' dispersion threshold, :mod:`.spots` and :mod:`.fused`), and
``spot_separations``. ``find_spots``, ``frame_statistics`` and ``radial_profile`` are the
separate DIALS-definition kernels (used as references by the tests and by ``dispersion``).
"""

from typing import Any

import numpy as np

from .geometry import ICE_RINGS_D, SeriesConstants, sentinel_for
from .radial import RadialProfile, radial_profile
from .separation import Separations, spot_separations
from .spots import SpotList, find_spots
from .stats import FrameStats, frame_statistics

METHODS = ("radial", "dispersion")
"""Spot-finding methods of :func:`analyse_frame` (the first is the default)."""


def make_workspace(method: str = "radial") -> Any:
    """Reusable buffers for :func:`analyse_frame` with *method* (one per worker thread)."""
    if method == "radial":
        from .radial_spots import RadialWorkspace

        return RadialWorkspace()
    if method == "dispersion":
        from .fused import Workspace

        return Workspace()
    raise ValueError(f"unknown spot-finding method {method!r} (known: {', '.join(METHODS)})")


def analyse_frame(frame: np.ndarray, *, constants: SeriesConstants, method: str = "radial", workspace: Any = None,
                  saturation_value: float | None = None, hit_min_spots: int = 30,
                  **options: Any) -> tuple[SpotList, FrameStats, RadialProfile]:
    """Spots, statistics and radial profile of one frame with *method*; ``options`` go to the
    method's function (``snr_seed``, ``snr_grow``... for radial; ``sigma_strong``... for dispersion)."""
    if method == "radial":
        from .radial_spots import analyse_frame_radial as run
    elif method == "dispersion":
        from .fused import analyse_frame as run
    else:
        raise ValueError(f"unknown spot-finding method {method!r} (known: {', '.join(METHODS)})")
    if not frame.dtype.isnative:  # big-endian data from a file: the kernels read native numbers
        frame = frame.astype(frame.dtype.newbyteorder("="))
    return run(frame, constants=constants, workspace=workspace, saturation_value=saturation_value,
               hit_min_spots=hit_min_spots, **options)


__all__ = ["ICE_RINGS_D", "METHODS", "FrameStats", "RadialProfile", "Separations", "SeriesConstants", "SpotList",
           "analyse_frame", "find_spots", "frame_statistics", "make_workspace", "radial_profile", "sentinel_for",
           "spot_separations"]
