"""Pure per-frame kernels of the live engine (see each module for the definition it follows).

``SeriesConstants.build``/``build_without_geometry`` once per series, then per frame
``find_spots``, ``frame_statistics``, ``radial_profile`` and ``spot_separations``.
"""

from .geometry import ICE_RINGS_D, SeriesConstants, sentinel_for
from .radial import RadialProfile, radial_profile
from .separation import Separations, spot_separations
from .spots import SpotList, find_spots
from .stats import FrameStats, frame_statistics

__all__ = ["ICE_RINGS_D", "FrameStats", "RadialProfile", "Separations", "SeriesConstants", "SpotList", "find_spots",
           "frame_statistics", "radial_profile", "sentinel_for", "spot_separations"]
