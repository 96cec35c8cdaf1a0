"""The MXCuBE LIMS object: store/update/finalize record one collection, updates replace, outages never raise."""

from __future__ import annotations

import copy
import json
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugins.mxcube.mxcat_lims import MxcatLims  # noqa: E402

DC = json.loads((Path(__file__).parent / "data" / "adapters" / "mxcube_dc_complete.json").read_text())


@pytest.fixture()
def lims(data_dir):
    lims = MxcatLims(facility="ESRF", beamline="ID30A-1")
    lims.init()
    lims.set_session("mx2532", "20261121")
    yield lims
    lims.close()


def records(data_dir):
    db = sqlite3.connect(data_dir / "catalogue.sqlite")
    return dict(db.execute("SELECT key, value FROM records"))


def test_a_collection_is_recorded_and_updated_in_place(lims, data_dir):
    dc = copy.deepcopy(DC)
    ids = lims.store_data_collection(dc)
    assert ids[0] == dc.get("collection_id")
    dc["status"] = "Data collection successful"
    dc.setdefault("oscillation_sequence", [{}])[0]["exposure_time"] = 0.02
    lims.finalize_data_collection(dc)
    lims._catalogue.deliver()
    got = records(data_dir)
    assert got["mmcat_collection.exposure_time"] == 0.02
    assert got["mmcat_collection.status"] == "Data collection successful"
    db = sqlite3.connect(data_dir / "catalogue.sqlite")
    assert db.execute("SELECT COUNT(*) FROM records WHERE key = 'mmcat_collection.exposure_time'").fetchone()[0] == 1


def test_bad_values_and_broken_catalogues_never_reach_mxcube(lims, data_dir, tmp_path):
    dc = copy.deepcopy(DC)
    dc["transmission"] = 400  # out of range: rejected, logged, not raised
    lims.store_data_collection(dc)
    lims.update_data_collection({"oscillation_sequence": "nonsense"})  # unreadable: logged, not raised
    broken = MxcatLims(beamline="B", config=str(tmp_path / "missing.yaml"))
    broken.init()  # configuration missing: logged, the object stays usable
    assert broken.store_data_collection(dc) == (dc.get("collection_id"), dc.get("detector_id"))
