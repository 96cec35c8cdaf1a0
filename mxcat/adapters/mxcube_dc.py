"""MXCuBE collection dictionary (JSON): the parameters beamline control sends the LIMS for one collection.

MXCuBE (mxcube/mxcubecore) describes a data collection as a dictionary: ``to_collect_dict`` of its
queue model builds it (``fileinfo``, ``oscillation_sequence``, ``experiment_type``, requested
``energy``, ``transmission``, ``resolution``...) and ``AbstractCollect`` completes it during the
collection with what was measured or set (``wavelength`` in Å, ``detectorDistance`` in mm,
``xBeam``/``yBeam`` and ``beamSizeAtSampleX``/``Y`` in mm, ``flux`` in photons/s, ``status``,
``collection_start_time`` as ``%Y-%m-%d %H:%M:%S``, sample-changer barcodes and slots, the ISPyB
``collection_id``), then hands it to the ISPyB client. Sites dump it as JSON for logging or
replay; this adapter reads such a dump: one object, or the one-element list ``to_collect_dict``
returns. Units are MXCuBE's: energy in keV, transmission in percent, lengths in mm.

Only the first oscillation of ``oscillation_sequence`` is read (ISPyB stores one per collection;
others are noted). The ISPyB session and sample ids have no mmCAT item and become hints
(``ispyb_session_id``, ``ispyb_sample_id``), as does the sample barcode; the dataset hint is
``<prefix>_<run_number>``, the name MXCuBE gives the images.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mxcat.adapters import Parsed, Result
from mxcat.adapters._util import keep_valid, read_json
from mxcat.adapters.ispyb_xml import iso_time, num, text
from mxcat.errors import ParseError

NAME = "mxcube_dc"

NUMBERS: dict[str, tuple[str, str | None]] = {
    # top-level key: (mmCAT key, unit MXCuBE uses)
    "wavelength": ("diffrn_radiation_wavelength.wavelength", "angstroms"),
    "energy": ("mmcat_collection.photon_energy", "kiloelectron_volts"),
    "resolutionAtCorner": ("mmcat_collection.resolution_corner", "angstroms"),
    "transmission": ("mmcat_collection.transmission", "percent"),
    "flux": ("mmcat_collection.flux", "photons_per_second"),
    "flux_end": ("mmcat_collection.flux_end", "photons_per_second"),
    "xBeam": ("mmcat_collection.beam_centre_x", "millimetres"),
    "yBeam": ("mmcat_collection.beam_centre_y", "millimetres"),
    "beamSizeAtSampleX": ("mmcat_collection.beam_size_x", "millimetres"),
    "beamSizeAtSampleY": ("mmcat_collection.beam_size_y", "millimetres"),
    "slitGapHorizontal": ("mmcat_collection.slit_gap_horizontal", "millimetres"),
    "slitGapVertical": ("mmcat_collection.slit_gap_vertical", "millimetres"),
    "undulatorGap1": ("mmcat_collection.undulator_gap_1", "millimetres"),
    "undulatorGap2": ("mmcat_collection.undulator_gap_2", "millimetres"),
    "undulatorGap3": ("mmcat_collection.undulator_gap_3", "millimetres"),
    "totalAbsorbedDose": ("mmcat_collection.absorbed_dose", "megagrays"),
}
TEXTS: dict[str, str] = {
    "experiment_type": "mmcat_collection.experiment_type",
    "status": "mmcat_collection.status",
    "beamShape": "mmcat_collection.beam_shape",
    "synchrotronMode": "mmcat_collection.synchrotron_mode",
    "actualCenteringPosition": "mmcat_collection.centring_position",
    "centeringMethod": "mmcat_collection.centring_method",
    "comments": "mmcat_collection.comments",
    "detector_binning_mode": "mmcat_collection.detector_mode",
    "actualSampleBarcode": "mmcat_sample.barcode",
    "actualContainerBarcode": "mmcat_sample.container_barcode",
    "actualSampleSlotInContainer": "mmcat_sample.container_position",
    "actualContainerSlotInSC": "mmcat_sample.changer_position",
    "position_name": "mmcat_sample.position_name",
    **{f"xtalSnapshotFullPath{i}": f"mmcat_collection.crystal_snapshot_{i}" for i in (1, 2, 3, 4)},
}
OSCILLATION: dict[str, tuple[str, str | None]] = {
    "start": ("mmcat_collection.oscillation_start", "degrees"),
    "range": ("mmcat_collection.oscillation_width", "degrees"),
    "overlap": ("mmcat_collection.oscillation_overlap", "degrees"),
    "exposure_time": ("mmcat_collection.exposure_time", "seconds"),
    "kappaStart": ("mmcat_collection.kappa_start", "degrees"),
    "phiStart": ("mmcat_collection.phi_start", "degrees"),
    "number_of_images": ("mmcat_collection.number_of_images", None),
    "start_image_number": ("mmcat_collection.first_image_number", None),
    "number_of_passes": ("mmcat_collection.number_of_passes", None),
}
INTEGERS = {"mmcat_collection.number_of_images", "mmcat_collection.first_image_number", "mmcat_collection.number_of_passes",
            "mmcat_collection.run_number", "mmcat_collection.ispyb_datacollection_id"}


def _fail(path: Path, reason: str) -> ParseError:
    return ParseError(reason, adapter=NAME, path=path)


class MxcubeDataCollection:
    """MXCuBE ``datacollection_dict`` dumped as JSON: the parameters of one collection (dataset level)."""

    name = NAME
    description = "MXCuBE collection dictionary (JSON): oscillation, file names, beam and sample-changer parameters"
    _OSC = re.compile(rb'"oscillation_sequence"\s*:')
    _OTHER = re.compile(rb'"(fileinfo|experiment_type|sessionId|collection_id|sample_reference)"\s*:')

    def detect(self, head: bytes, name: str) -> bool:
        try:
            start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
            return start[:1] in (b"{", b"[") and self._OSC.search(head) is not None and self._OTHER.search(head) is not None
        except Exception:  # noqa: BLE001 - a detector never raises (adapter protocol)
            return False

    def parse(self, path: Path) -> Parsed:
        doc = read_json(path, NAME)
        return self.parse_dict(doc, path)

    def parse_dict(self, doc: Any, path: Path = Path("<mxcube>")) -> Parsed:
        """Read a collection dictionary already in memory (what MXCuBE hands its LIMS object)."""
        if isinstance(doc, list):
            if len(doc) != 1:
                raise _fail(path, f"a list of {len(doc)} collections; one collection dictionary per file is supported")
            doc = doc[0]
        if not isinstance(doc, dict):
            raise _fail(path, "not an MXCuBE collection dictionary: expected a JSON object")
        osc = doc.get("oscillation_sequence")
        if not isinstance(osc, list) or not osc or not all(isinstance(o, dict) for o in osc):
            raise _fail(path, "not an MXCuBE collection dictionary: no oscillation_sequence list of objects")
        fileinfo = doc.get("fileinfo", {})
        if not isinstance(fileinfo, dict):
            raise _fail(path, f"fileinfo is a {type(fileinfo).__name__}, expected an object")
        notes: list[str] = []
        r = Result(level="dataset")
        for k, (key, unit) in NUMBERS.items():
            self._number(r, key, doc.get(k), unit, k, notes)
        distance = doc.get("detectorDistance", doc.get("detector_distance"))
        self._number(r, "mmcat_collection.detector_distance", distance, "millimetres", "detectorDistance", notes)
        resolution = doc.get("resolution")
        if isinstance(resolution, dict):
            resolution = resolution.get("upper")
        self._number(r, "mmcat_collection.resolution_edge", resolution, "angstroms", "resolution", notes)
        for k, key in TEXTS.items():
            v = doc.get(k)
            if isinstance(v, bool) or isinstance(v, (dict, list)):
                continue
            r.add(key, text(v))
        r.add("mmcat_collection.start_time", iso_time(doc.get("collection_start_time"), notes, "collection_start_time"))
        r.add("mmcat_collection.end_time", iso_time(doc.get("collection_end_time"), notes, "collection_end_time"))
        self._number(r, "mmcat_collection.ispyb_datacollection_id", doc.get("collection_id"), None, "collection_id", notes)
        if len(osc) > 1:
            notes.append(f"oscillation_sequence has {len(osc)} entries; the first is read")
        for k, (key, unit) in OSCILLATION.items():
            self._number(r, key, osc[0].get(k), unit, f"oscillation_sequence[0].{k}", notes)
        r.add("mmcat_collection.directory", text(fileinfo.get("directory")))
        r.add("mmcat_collection.image_prefix", text(fileinfo.get("prefix")))
        r.add("mmcat_collection.file_template", text(fileinfo.get("template")))
        r.add("mmcat_collection.image_suffix", text(fileinfo.get("suffix")))
        self._number(r, "mmcat_collection.run_number", fileinfo.get("run_number"), None, "fileinfo.run_number", notes)
        hints = self._hints(doc, fileinfo)
        parsed = Parsed(adapter=NAME, path=path, program="MXCuBE", results=[r], hints=hints, notes=notes)
        return keep_valid(parsed)

    @staticmethod
    def _number(r: Result, key: str, raw: Any, unit: str | None, what: str, notes: list[str]) -> None:
        v = num(raw)
        if v is None:
            if raw is not None and not isinstance(raw, bool) and text(raw) is not None:
                notes.append(f"{what} = {raw!r} is not a number; left out")
            return
        if key in INTEGERS:
            if not v.is_integer():
                notes.append(f"{what} = {v:g} is not a whole number; left out")
                return
            r.add(key, int(v))
        else:
            r.add(key, v, unit)

    @staticmethod
    def _hints(doc: dict[str, Any], fileinfo: dict[str, Any]) -> dict[str, str]:
        hints: dict[str, str] = {}
        prefix, run = text(fileinfo.get("prefix")), num(fileinfo.get("run_number"))
        if prefix:
            hints["dataset"] = f"{prefix}_{int(run)}" if run is not None and run.is_integer() else prefix
        sample_ref = doc.get("sample_reference") if isinstance(doc.get("sample_reference"), dict) else {}
        for hint, v in (("sample_barcode", doc.get("actualSampleBarcode")), ("ispyb_session_id", doc.get("sessionId")),
                        ("ispyb_sample_id", doc.get("blSampleId", sample_ref.get("blSampleId")))):
            s = text(v) if not isinstance(v, bool) else None
            if s:
                hints[hint] = s
        return hints


ADAPTER = MxcubeDataCollection()
