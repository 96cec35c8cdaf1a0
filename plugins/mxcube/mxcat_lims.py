"""An MXCuBE LIMS object that sends each data collection's metadata to mxcat.

MXCuBE talks to its LIMS through a hardware object with ``store_data_collection``,
``update_data_collection``, ``finalize_data_collection`` and ``store_image`` (mxcubecore's
``AbstractLims``); a composite LIMS (as ESRF's forwards every call to two systems) can hold this
object beside ISPyB or ICAT, so mxcat is added without replacing anything.

The collection dictionary is read with mxcat's ``mxcube_dc`` adapter, validated against mmCAT and
written to the local durable outbox before the call returns; a background deliverer sends it to
the catalogues. A catalogue outage therefore never blocks or fails a collection, and no exception
from mxcat ever reaches MXCuBE: problems are logged. All calls for one collection share one
provenance run, so ``update`` and ``finalize`` update the same records instead of adding copies.

Only mxcat's public API is used: :mod:`mxcat.client`, :mod:`mxcat.records` and the adapter registry.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from mxcat.adapters import registry
from mxcat.client import Catalogue
from mxcat.errors import MxcatError
from mxcat.records import Batch, Provenance, Subject

log = logging.getLogger("mxcat.mxcube")


class MxcatLims:
    """Forwards MXCuBE's LIMS calls for data collections to mxcat.

    ``facility`` and ``beamline`` name the beamline; ``proposal`` and ``session`` are set when a
    user logs in (:meth:`set_session`). ``config`` is an mxcat configuration file (default: the
    usual lookup).
    """

    def __init__(self, name: str = "mxcat_lims", *, facility: str | None = None, beamline: str | None = None,
                 config: str | None = None) -> None:
        self.name = name
        self.facility = facility
        self.beamline = beamline
        self.config = config
        self.proposal: str | None = None
        self.session: str | None = None
        self._catalogue: Catalogue | None = None
        self._runs: dict[str, str] = {}
        self._adapter = registry()["mxcube_dc"]

    # -- life cycle (mxcubecore calls init() once) -----------------------------------------------

    def init(self) -> None:
        try:
            self._catalogue = Catalogue.open(self.config)
            self.facility = self.facility or self._catalogue.config.facility
            self.beamline = self.beamline or self._catalogue.config.beamline
            self._catalogue.start_delivery()
        except MxcatError:
            log.exception("mxcat is not available; collections will not be recorded in mxcat")
            self._catalogue = None

    def close(self) -> None:
        if self._catalogue is not None:
            self._catalogue.close()
            self._catalogue = None

    def set_session(self, proposal: str | None, session: str | None) -> None:
        self.proposal, self.session = proposal, session

    # -- the LIMS calls -----------------------------------------------------------------------------

    def store_data_collection(self, mx_collection: dict[str, Any], bl_config: Any = None) -> tuple[Any, Any]:
        """Record a new collection; returns the collection and detector ids MXCuBE already has."""
        self._send(mx_collection, "started")
        return mx_collection.get("collection_id"), mx_collection.get("detector_id")

    def update_data_collection(self, mx_collection: dict[str, Any]) -> None:
        self._send(mx_collection, "updated")

    def finalize_data_collection(self, mx_collection: dict[str, Any]) -> None:
        self._send(mx_collection, "finished")

    def store_image(self, image_dict: dict[str, Any]) -> None:
        """Images are described by the detector files; nothing per image is recorded here."""

    # -- internals ------------------------------------------------------------------------------------

    def _run_for(self, mx_collection: dict[str, Any]) -> str:
        key = str(mx_collection.get("collection_id") or id(mx_collection))
        if key not in self._runs:
            self._runs[key] = f"mxcube-dc-{mx_collection.get('collection_id') or uuid.uuid4().hex[:12]}"
        return self._runs[key]

    def _send(self, mx_collection: dict[str, Any], stage: str) -> None:
        if self._catalogue is None:
            return
        try:
            parsed = self._adapter.parse_dict(mx_collection)
            dataset = Subject(facility=self.facility, beamline=self.beamline, proposal=self.proposal, session=self.session,
                              sample=parsed.hints.get("sample_barcode"), dataset=parsed.hints.get("dataset") or self._run_for(mx_collection))
            batch = Batch(dataset, Provenance(run=self._run_for(mx_collection), program="MXCuBE", adapter="mxcube_dc"))
            for result in parsed.results:
                batch.observations.extend(result.values)
            receipt = self._catalogue.ingest(batch, deliver_timeout=None)
            for r in receipt.rejected:
                log.warning("mxcat rejected %s (%s): %s", r.key, stage, r.reason)
        except MxcatError as err:
            log.warning("mxcat could not record the collection (%s): %s", stage, err)
        except Exception:  # noqa: BLE001 - mxcat must never break a data collection
            log.exception("mxcat failed to record the collection (%s)", stage)
