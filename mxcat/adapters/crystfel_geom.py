"""CrystFEL detector geometry (.geom): panels, camera length, photon energy and masks for indexamajig.

A geometry file (CrystFEL, T. A. White et al. 2012, J. Appl. Cryst. 45, 335; format described in
``man crystfel_geometry``, https://www.desy.de/~twhite/crystfel/manual-crystfel_geometry.html) is a
list of ``key = value`` lines; ``;`` starts a comment. Keys without a slash are global and act as
defaults for every panel (``clen``, ``coffset``, ``res``, ``photon_energy``, ``adu_per_eV`` or
``adu_per_photon``, ``data``, ``dim0``..., ``mask``, ``mask_file``, ``mask_good``, ``mask_bad``,
``max_adu``, ``rigid_group_*``, ``group_*``); ``name/key`` sets a property of one panel (``min_fs``,
``max_fs``, ``min_ss``, ``max_ss``, ``corner_x``, ``corner_y``, ``fs``, ``ss`` as ``+0.99x -0.01y``,
and any global key) or, for names starting with ``bad``, of a bad region given in lab x/y (pixels
from the beam) or in fs/ss of one panel. ``clen`` and ``photon_energy`` may be numbers, with an
optional unit since CrystFEL 0.10 (m or mm, eV or keV), or HDF5 paths read per image.

:func:`read_geometry` returns a :class:`Geometry` for the live engine. The adapter stores what mmCAT
holds (dataset level): the camera length ``clen + coffset`` as the detector distance when it is a
number, the photon energy, the pixel size ``1/res`` when all panels share it, the image size of a
one-panel detector and the HDF5 data path; HDF5-path values, the panel count and the bad regions go
to the notes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mxcat.adapters import Parsed, Result
from mxcat.adapters._util import read_text
from mxcat.errors import ParseError

NAME = "crystfel_geom"

_UNSIGNED = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUM = rf"[-+]?{_UNSIGNED}"
_TERM = re.compile(rf"([-+]?)({_UNSIGNED})?([xyz])")
_PANEL_KEYS = re.compile(rb"^[ \t]*[\w.-]+/(min_fs|max_fs|min_ss|max_ss|corner_x|corner_y)[ \t]*=", re.M)
_GLOBAL_KEYS = re.compile(rb"^[ \t]*(clen|res|photon_energy|adu_per_eV|adu_per_photon|coffset|dim\d)[ \t]*=", re.M)
_INHERITED = ("res", "clen", "coffset", "adu_per_eV", "adu_per_photon", "max_adu", "data", "mask", "mask_file")
"""Global keys that are defaults of every panel."""
_PANEL_ONLY = ("min_fs", "max_fs", "min_ss", "max_ss", "corner_x", "corner_y", "fs", "ss")


@dataclass
class Panel:
    """One panel: its rectangle in the data array, its position and orientation in the lab frame."""

    name: str
    min_fs: int
    max_fs: int
    min_ss: int
    max_ss: int
    corner_x: float
    """Position of the panel's first pixel corner, in pixels from the beam, lab x."""
    corner_y: float
    fs: tuple[float, float, float]
    """Lab-frame direction of the fast-scan axis (x, y, z components in pixels)."""
    ss: tuple[float, float, float]
    res: float
    """Pixels per metre."""
    clen: float | str | None = None
    """Camera length in metres, or the HDF5 path it is read from per image."""
    coffset: float = 0.0
    """Added to clen, in metres."""
    adu_per_eV: float | None = None
    adu_per_photon: float | None = None
    max_adu: float | None = None
    data: str | None = None
    mask: str | None = None
    mask_file: str | None = None
    dims: dict[int, str] = field(default_factory=dict)
    no_index: bool = False

    @property
    def width(self) -> int:
        return self.max_fs - self.min_fs + 1

    @property
    def height(self) -> int:
        return self.max_ss - self.min_ss + 1

    @property
    def pixel_size(self) -> float:
        """Pixel size in metres."""
        return 1.0 / self.res


@dataclass
class BadRegion:
    """A region excluded from analysis: in lab x/y (pixels from the beam) or in fs/ss of one panel."""

    name: str
    panel: str | None = None
    min_x: float | None = None
    max_x: float | None = None
    min_y: float | None = None
    max_y: float | None = None
    min_fs: int | None = None
    max_fs: int | None = None
    min_ss: int | None = None
    max_ss: int | None = None

    @property
    def in_fsss(self) -> bool:
        return self.min_fs is not None


@dataclass
class Geometry:
    """A CrystFEL detector geometry, as :func:`read_geometry` reads it."""

    panels: list[Panel]
    bad_regions: list[BadRegion] = field(default_factory=list)
    photon_energy: float | str | None = None
    """Photon energy in eV, or the HDF5 path it is read from per image."""
    clen: float | str | None = None
    """Global camera length in metres, or an HDF5 path."""
    coffset: float | None = None
    res: float | None = None
    adu_per_eV: float | None = None
    adu_per_photon: float | None = None
    data: str | None = None
    mask: str | None = None
    mask_file: str | None = None
    mask_good: int | None = None
    mask_bad: int | None = None
    dims: dict[int, str] = field(default_factory=dict)
    rigid_groups: dict[str, list[str]] = field(default_factory=dict)
    rigid_group_collections: dict[str, list[str]] = field(default_factory=dict)
    other: dict[str, str] = field(default_factory=dict)
    """Global keys not interpreted here, as written."""

    def camera_length(self) -> float | None:
        """clen + coffset in metres when every panel has a numeric camera length and they agree, else None."""
        values = {round(p.clen + p.coffset, 9) for p in self.panels if isinstance(p.clen, float)}
        if len(values) != 1 or any(not isinstance(p.clen, float) for p in self.panels):
            return None
        return values.pop()


class GeometryError(ValueError):
    """A malformed geometry text; ``line`` is the 1-based line when known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.line = line


_Bad = GeometryError


def _float(text: str, what: str, line: int | None) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _Bad(f"{what}: {text!r} is not a number", line) from None
    if not math.isfinite(v):
        raise _Bad(f"{what}: {text!r} is not a finite number", line)
    return v


def _int(text: str, what: str, line: int | None) -> int:
    v = _float(text, what, line)
    if not v.is_integer():
        raise _Bad(f"{what}: {text!r} is not a whole number", line)
    return int(v)


def _quantity(text: str, units: dict[str, float], what: str, line: int) -> float | str:
    """A number with an optional unit (scaled to the base unit), or an HDF5 path (kept as text)."""
    if text.startswith("/"):
        return text
    m = re.fullmatch(rf"({_NUM})\s*([A-Za-z]*)", text)
    if m is None or m.group(2) not in units:
        raise _Bad(f"{what}: {text!r} is neither a number (units {', '.join(u for u in units if u)}) nor an HDF5 path", line)
    v = float(m.group(1)) * units[m.group(2)]
    if not math.isfinite(v):
        raise _Bad(f"{what}: {text!r} is not finite", line)
    return v


def _direction(text: str, what: str, line: int) -> tuple[float, float, float]:
    """``+0.99x -0.01y`` (or ``x``, ``-y``, ``0.1x +0.9y +0.1z``) as an (x, y, z) vector."""
    compact = text.replace(" ", "")
    out = {"x": 0.0, "y": 0.0, "z": 0.0}
    pos = 0
    for m in _TERM.finditer(compact):
        if m.start() != pos or (m.start() > 0 and not m.group(1)):
            raise _Bad(f"{what}: cannot read the direction {text!r}", line)
        coeff = float(m.group(2)) if m.group(2) else 1.0
        out[m.group(3)] += -coeff if m.group(1) == "-" else coeff
        pos = m.end()
    if pos != len(compact) or pos == 0:
        raise _Bad(f"{what}: cannot read the direction {text!r}", line)
    v = (out["x"], out["y"], out["z"])
    if math.hypot(*v) == 0 or not all(math.isfinite(c) for c in v):
        raise _Bad(f"{what}: the direction {text!r} is a zero vector", line)
    return v


def parse_geometry_text(text: str) -> Geometry:
    """A :class:`Geometry` from the text of a geometry file; raises :class:`GeometryError` when malformed."""
    glob: dict[str, tuple[str, int]] = {}
    groups: dict[str, dict[str, tuple[str, int]]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise _Bad(f"expected 'key = value', found {line[:40]!r}", n)
        if "/" in key:
            name, _, prop = key.rpartition("/")
            if not name or not prop:
                raise _Bad(f"cannot read the key {key!r}", n)
            groups.setdefault(name, {})[prop] = (value, n)
        else:
            glob[key] = (value, n)
    g = Geometry(panels=[])
    defaults: dict[str, object] = {}
    for key, (value, n) in glob.items():
        if key == "clen":
            g.clen = defaults["clen"] = _quantity(value, {"": 1.0, "m": 1.0, "mm": 1e-3}, "clen", n)
        elif key == "coffset":
            g.coffset = defaults["coffset"] = _float(value, "coffset", n)
        elif key == "photon_energy":
            g.photon_energy = _quantity(value, {"": 1.0, "eV": 1.0, "keV": 1e3}, "photon_energy", n)
            if isinstance(g.photon_energy, float) and g.photon_energy <= 0:
                raise _Bad(f"photon_energy {value!r} is not positive", n)
        elif key == "res":
            g.res = defaults["res"] = _float(value, "res", n)
        elif key in ("adu_per_eV", "adu_per_photon", "max_adu"):
            v = _float(value, key, n)
            defaults[key] = v
            if key != "max_adu":
                setattr(g, key, v)
        elif key in ("data", "mask", "mask_file"):
            setattr(g, key, value)
            defaults[key] = value
        elif key in ("mask_good", "mask_bad"):
            try:
                setattr(g, key, int(value, 0))
            except ValueError:
                raise _Bad(f"{key}: {value!r} is not an integer", n) from None
        elif re.fullmatch(r"dim\d+", key):
            g.dims[int(key[3:])] = value
        elif key.startswith("rigid_group_collection_"):
            g.rigid_group_collections[key[len("rigid_group_collection_"):]] = [v.strip() for v in value.split(",")]
        elif key.startswith("rigid_group_"):
            g.rigid_groups[key[len("rigid_group_"):]] = [v.strip() for v in value.split(",")]
        elif key.startswith("group_"):
            g.rigid_groups[key[len("group_"):]] = [v.strip() for v in value.split(",")]
        else:
            g.other[key] = value
    for name, props in groups.items():
        if name.startswith("bad"):
            g.bad_regions.append(_bad_region(name, props))
        else:
            g.panels.append(_panel(name, props, defaults, g.dims))
    if not g.panels:
        raise _Bad("no panels (lines 'name/min_fs = ...')", None)
    names = {p.name for p in g.panels}
    for b in g.bad_regions:
        if b.panel is not None and b.panel not in names:
            raise _Bad(f"bad region {b.name} names an unknown panel {b.panel!r}", None)
    return g


def _panel(name: str, props: dict[str, tuple[str, int]], defaults: dict[str, object], dims: dict[int, str]) -> Panel:
    missing = [k for k in _PANEL_ONLY if k not in props]
    line = min(n for _, n in props.values())
    if missing:
        raise _Bad(f"panel {name} lacks {', '.join(missing)}", line)

    def whole(key: str) -> int:
        return _int(props[key][0], f"{name}/{key}", props[key][1])

    def real(key: str) -> float:
        return _float(props[key][0], f"{name}/{key}", props[key][1])

    p = Panel(name=name, min_fs=whole("min_fs"), max_fs=whole("max_fs"), min_ss=whole("min_ss"), max_ss=whole("max_ss"),
              corner_x=real("corner_x"), corner_y=real("corner_y"),
              fs=_direction(props["fs"][0], f"{name}/fs", props["fs"][1]),
              ss=_direction(props["ss"][0], f"{name}/ss", props["ss"][1]),
              res=0.0, dims=dict(dims))
    for key in _INHERITED:
        if key in defaults:
            setattr(p, key, defaults[key])
    for key, (value, n) in props.items():
        if key == "clen":
            p.clen = _quantity(value, {"": 1.0, "m": 1.0, "mm": 1e-3}, f"{name}/clen", n)
        elif key in ("coffset", "res", "adu_per_eV", "adu_per_photon", "max_adu"):
            setattr(p, key, _float(value, f"{name}/{key}", n))
        elif key in ("data", "mask", "mask_file"):
            setattr(p, key, value)
        elif key == "no_index":
            p.no_index = value.strip().lower() in ("1", "true", "yes")
    if p.res <= 0:
        raise _Bad(f"panel {name} has no positive res (pixels per metre)", line)
    if p.min_fs < 0 or p.min_ss < 0 or p.max_fs < p.min_fs or p.max_ss < p.min_ss:
        raise _Bad(f"panel {name} has an empty or negative pixel range", line)
    return p


def _bad_region(name: str, props: dict[str, tuple[str, int]]) -> BadRegion:
    b = BadRegion(name)
    for key, (value, n) in props.items():
        if key == "panel":
            b.panel = value
        elif key in ("min_x", "max_x", "min_y", "max_y"):
            setattr(b, key, _float(value, f"{name}/{key}", n))
        elif key in ("min_fs", "max_fs", "min_ss", "max_ss"):
            setattr(b, key, _int(value, f"{name}/{key}", n))
    xy = [getattr(b, k) for k in ("min_x", "max_x", "min_y", "max_y")]
    fsss = [getattr(b, k) for k in ("min_fs", "max_fs", "min_ss", "max_ss")]
    line = min(n for _, n in props.values())
    if not (all(v is not None for v in xy) or all(v is not None for v in fsss)):
        raise _Bad(f"bad region {name} is neither a complete x/y nor a complete fs/ss rectangle", line)
    return b


def read_geometry(path: Path | str) -> Geometry:
    """Read a CrystFEL geometry file; ParseError when it is malformed."""
    path = Path(path)
    text = read_text(path, NAME)
    try:
        return parse_geometry_text(text)
    except _Bad as err:
        raise ParseError(str(err), adapter=NAME, path=path, line=err.line) from err


class CrystfelGeom:
    name = NAME
    description = "CrystFEL geometry (.geom): panels, camera length, photon energy, pixel size"

    def detect(self, head: bytes, name: str) -> bool:
        try:
            start = head.lstrip()
            if start.startswith((b"CrystFEL stream format", b"CrystFEL unit cell file")) or b"\0" in head:
                return False
            if _PANEL_KEYS.search(head):
                return True
            return name.lower().endswith(".geom") and _GLOBAL_KEYS.search(head) is not None
        except Exception:  # noqa: BLE001 - a detector never raises
            return False

    def parse(self, path: Path) -> Parsed:
        g = read_geometry(path)
        notes = [f"{len(g.panels)} panel(s), {len(g.bad_regions)} bad region(s)"]
        r = Result(level="dataset")
        distance = g.camera_length()
        clens = {p.clen for p in g.panels if isinstance(p.clen, str)}
        if clens:
            notes.append(f"camera length read per image from {', '.join(sorted(clens))}")
        elif distance is not None and distance > 0:
            r.add("mmcat_collection.detector_distance", distance, "m")
            if any(p.coffset for p in g.panels):
                notes.append("detector distance is clen + coffset")
        elif any(p.clen is not None for p in g.panels):
            notes.append("camera lengths differ between panels or are not positive: no detector distance stored")
        if isinstance(g.photon_energy, float):
            r.add("mmcat_collection.photon_energy", g.photon_energy, "eV")
        elif isinstance(g.photon_energy, str):
            notes.append(f"photon energy read per image from {g.photon_energy}")
        resolutions = {p.res for p in g.panels}
        if len(resolutions) == 1:
            size_um = round(1e6 / resolutions.pop(), 3)
            r.add("mmcat_detector.pixel_size_x", size_um, "micrometres")
            r.add("mmcat_detector.pixel_size_y", size_um, "micrometres")
        if len(g.panels) == 1:
            r.add("mmcat_detector.size_fast", g.panels[0].width, "pixels")
            r.add("mmcat_detector.size_slow", g.panels[0].height, "pixels")
        data = {p.data for p in g.panels}
        if len(data) == 1 and (d := data.pop()):
            r.add("mmcat_collection.image_container_path", d)
        if g.adu_per_photon is not None or g.adu_per_eV is not None:
            notes.append("detector gain (adu_per_photon / adu_per_eV) has no mmCAT item")
        if g.mask_file or g.mask:
            notes.append(f"mask {g.mask or ''} in {g.mask_file or 'the data file'}")
        return Parsed(adapter=NAME, path=path, program="CrystFEL", results=[r], notes=notes)


ADAPTER = CrystfelGeom()
