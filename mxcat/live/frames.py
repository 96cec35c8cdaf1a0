"""What sources hand to the engine: one frame, and the metadata of the series it belongs to.

Geometry conventions (as DIALS and NXmx use them): pixel indices are (slow, fast) = (row, column);
the beam centre is in pixels along fast (x) and slow (y); distances in metres, wavelength in
angstroms, pixel sizes in metres. Values a source does not know are None; kernels that need them
are then skipped for the series (declared once, not per frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SeriesInfo:
    """Everything constant over one series of images."""

    series_id: str
    protocol: str
    """``eiger1``, ``eiger2``, ``msgpack``, ``hdf5``, ``cbf`` or ``synthetic``."""
    shape: tuple[int, int] | None = None
    dtype: str | None = None
    n_images: int | None = None
    pixel_size_x: float | None = None
    pixel_size_y: float | None = None
    beam_centre_x: float | None = None
    beam_centre_y: float | None = None
    distance: float | None = None
    wavelength: float | None = None
    count_time: float | None = None
    frame_time: float | None = None
    omega_start: float | None = None
    omega_increment: float | None = None
    saturation_value: int | None = None
    bit_depth: int | None = None
    detector: str | None = None
    pixel_mask: np.ndarray | None = field(default=None, repr=False)
    """Non-zero marks a bad pixel (DECTRIS convention: bit 0 gap, 1 dead, 2 cold, 3 hot, 4 noisy)."""
    flatfield: np.ndarray | None = field(default=None, repr=False)
    channels: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_geometry(self) -> bool:
        """True when resolution-dependent statistics can be computed."""
        return None not in (self.pixel_size_x, self.pixel_size_y, self.beam_centre_x, self.beam_centre_y, self.distance, self.wavelength)


@dataclass
class Frame:
    """One detector image of a series.

    A source asked to defer bitshuffle-LZ4 decoding (option ``defer_bslz4``: the radial analysis
    then decodes a band at a time, in cache) leaves the checked but undecoded frame in ``encoded``
    (:class:`~mxcat.live.sources.decode.Bslz4Frame`) and in ``data`` a read-only stand-in of the
    right shape and dtype holding no pixels; :meth:`pixels` decodes it."""

    series_id: str
    index: int
    """Image number within the series as the source numbers it (Eiger: from 1)."""
    data: np.ndarray
    channel: str | None = None
    received: float | None = None
    """time.monotonic() when the source had the frame, for lag measurements."""
    extra: dict[str, Any] = field(default_factory=dict)
    encoded: Any = field(default=None, repr=False)

    def pixels(self) -> np.ndarray:
        """The decoded pixels (decoding a deferred frame once, into ``data``)."""
        if self.encoded is not None:
            self.data = self.encoded.decode()
            self.encoded = None
        return self.data


@dataclass
class SeriesEnd:
    """The source says the series is over (Eiger ``dseries_end``, ``end`` message, end of file)."""

    series_id: str
    n_received: int = 0
    n_malformed: int = 0
    n_missing: int = 0
    n_out_of_order: int = 0
