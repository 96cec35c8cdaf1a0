"""EDNA2 ISPyB store payload (JSON): one processing result in ISPyB's camelCase column names.

EDNA2 (the ESRF workflow framework, also run at MAX IV BioMAX) stores autoPROC, XIA2-DIALS and
EDNA_proc results in ISPyB through a task that takes a JSON document named after the ISPyB tables
of the AutoProc family: ``autoProcProgram``, ``autoProc``, ``autoProcScaling``,
``autoProcScalingStatistics`` (a list of overall/innerShell/outerShell rows),
``autoProcIntegration``, ``autoProcProgramAttachment`` and the ``dataCollectionId``. Column names
are those of the ISPyB schema in camelCase (``refinedCellA``, ``rmeasWithinIplusIminus``,
``ccAno``, ``sigAno``); they are matched ignoring case and underscores, and mapped to mmCAT
exactly as the ISPyB XML adapter maps them (:mod:`mxcat.adapters.ispyb_xml`, whose rules apply).

R values: EDNA2 converts Rmerge, Rmeas and Rpim to percentages before storing them in ISPyB
(values such as ``2.1999999999999997`` are fractions multiplied by 100), so the payload is read as
percent unless the values are impossible as percentages. The payload holds one result, labelled
``staraniso`` or ``isotropic`` by its content as in the XML adapter.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mxcat.adapters import Parsed
from mxcat.adapters._util import keep_valid, read_json
from mxcat.adapters.ispyb_xml import SHELLS, Block, Source, assemble, norm, num, text
from mxcat.errors import ParseError

NAME = "edna2_ispyb_json"
KNOWN = ("autoProcProgram", "autoProc", "autoProcScaling", "autoProcScalingStatistics", "autoProcIntegration")


def _flat(obj: Any, what: str, path: Path) -> dict[str, Any]:
    """A JSON object as {normalised name: value}; ParseError when it is not an object."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ParseError(f"{what} is a {type(obj).__name__}, expected an object", adapter=NAME, path=path)
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out.setdefault(norm(str(k)), v)
    return out


def _rows(obj: Any, what: str, path: Path) -> list[dict[str, Any]]:
    if obj is None:
        return []
    items = obj if isinstance(obj, list) else [obj]
    return [_flat(x, f"{what}[{i}]", path) for i, x in enumerate(items)]


class Edna2IspybJson:
    """EDNA2's ISPyB store payload (JSON with camelCase ISPyB columns): one processing result."""

    name = NAME
    description = "EDNA2 ISPyB store payload (JSON, camelCase ISPyB names): scaling statistics, cell, integration, program"
    _KEYS = re.compile(rb'"(autoProcScalingStatistics|autoProcProgram|autoProcScaling)"\s*:')

    def detect(self, head: bytes, name: str) -> bool:
        try:
            start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
            return start.startswith(b"{") and self._KEYS.search(head) is not None
        except Exception:  # noqa: BLE001 - a detector never raises (adapter protocol)
            return False

    def parse(self, path: Path) -> Parsed:
        doc = read_json(path, NAME)
        if not isinstance(doc, dict) or not any(k in doc for k in KNOWN):
            raise ParseError(f"not an EDNA2 ISPyB payload: expected an object with some of {', '.join(KNOWN)}",
                             adapter=NAME, path=path)
        src = Source(writer="EDNA2 ISPyB store payload", writer_scale="percent")
        src.program = _flat(doc.get("autoProcProgram"), "autoProcProgram", path)
        for i, a in enumerate(_rows(doc.get("autoProcProgramAttachment"), "autoProcProgramAttachment", path)):
            file = text(a.get("file"))
            if file is None and text(a.get("filename")):
                folder = text(a.get("filepath"))
                file = f"{folder.rstrip('/') + '/' if folder else ''}{text(a.get('filename'))}"
            if file:
                kind = text(a.get("filetype"))
                src.attachments.append(f"{kind} {file}" if kind else file)
            elif a:
                src.notes.append(f"autoProcProgramAttachment[{i}] names no file")
        block = Block(where="payload")
        block.autoproc = _flat(doc.get("autoProc"), "autoProc", path)
        block.scaling = _flat(doc.get("autoProcScaling"), "autoProcScaling", path)
        for i, row in enumerate(_rows(doc.get("autoProcScalingStatistics"), "autoProcScalingStatistics", path)):
            kind = text(row.get("scalingstatisticstype"))
            shell = SHELLS.get((kind or "").lower())
            if shell is None:
                src.notes.append(f"autoProcScalingStatistics[{i}] of type {kind!r} is not overall/innerShell/outerShell; left out")
            elif shell in block.stats:
                src.notes.append(f"autoProcScalingStatistics[{i}]: a second {kind} row; the first is kept")
            else:
                block.stats[shell] = row
        for integ in _rows(doc.get("autoProcIntegration"), "autoProcIntegration", path):
            block.integrations.append(({}, integ))
        dc = num(doc.get("dataCollectionId"))
        if dc is not None and dc.is_integer() and dc >= 0:
            src.collection_ids.append(int(dc))
        src.blocks.append(block)
        return keep_valid(assemble(NAME, path, src))


ADAPTER = Edna2IspybJson()
