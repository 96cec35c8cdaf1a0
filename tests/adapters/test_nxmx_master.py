"""NXmx / EIGER master HDF5: hand-checked metadata of the corpus masters, units, no image reads, damaged input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxcat.adapters._util import read_head
from mxcat.adapters.nxmx_master import ADAPTER
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

h5py = pytest.importorskip("h5py")
np = pytest.importorskip("numpy")

EIGER = "detector/dectris-eiger9m_fw1.6.4_master_semisynthetic.h5"
DLS = "detector/dls-i03-eiger16m_xrc_209_master.h5"


def _no_drops(p):
    assert not [n for n in p.notes if n.startswith("dropped")], p.notes


def test_dectris_eiger_9m_master(corpus_file, onto):
    p = ADAPTER.parse(corpus_file(EIGER))
    _no_drops(p)
    assert (p.program, p.version) == ("DECTRIS EIGER filewriter", "1.6.4")
    assert [(r.level, r.label) for r in p.results] == [("dataset", None)]
    v, _ = values_of(p, onto)
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.9801122)
    assert v["mmcat_collection.photon_energy"] == pytest.approx(12.65)  # 12650 eV
    assert v["mmcat_collection.detector_distance"] == pytest.approx(134.255)  # 0.134255 m
    assert v["mmcat_collection.beam_centre_x_px"] == pytest.approx(1607.415)
    assert v["mmcat_collection.beam_centre_y_px"] == pytest.approx(1586.4314)
    assert v["mmcat_collection.exposure_time"] == pytest.approx(0.00499)
    assert v["mmcat_collection.frame_time"] == pytest.approx(0.005)
    assert v["mmcat_collection.oscillation_start"] == 0.0
    assert v["mmcat_collection.oscillation_width"] == pytest.approx(0.5)
    assert v["mmcat_collection.oscillation_end"] == pytest.approx(0.5)
    assert v["mmcat_collection.number_of_images"] == 1  # nimages 1 x ntrigger 1
    assert v["diffrn_detector.type"] == "Dectris Eiger 9M"
    assert v["mmcat_detector.sensor_material"] == "Si"
    assert v["mmcat_detector.sensor_thickness"] == pytest.approx(450.0)  # micrometres
    assert v["mmcat_detector.pixel_size_x"] == pytest.approx(75.0)
    assert v["mmcat_detector.pixel_size_y"] == pytest.approx(75.0)
    assert v["mmcat_detector.saturation_value"] == 12440  # countrate_correction_count_cutoff
    assert v["mmcat_detector.bit_depth"] == 12
    assert v["mmcat_detector.threshold_energy"] == pytest.approx(6325.0)
    assert v["mmcat_detector.serial_number"] == "E-18-0102"
    assert v["mmcat_detector.readout_time"] == pytest.approx(1e-05)
    assert (v["mmcat_detector.size_fast"], v["mmcat_detector.size_slow"]) == (3110, 3269)
    assert v["mmcat_detector.countrate_correction_applied"] == "yes"
    assert v["mmcat_collection.start_time"] == "2016-12-16T07:06:17.852051"
    assert any("countrate_correction_count_cutoff" in n for n in p.notes)
    assert any("eiger-1.6.4" in n for n in p.notes)


def test_dls_nxmx_master_with_absent_data_files(corpus_file, onto):
    p = ADAPTER.parse(corpus_file(DLS))
    _no_drops(p)
    assert p.hints == {"dataset": "dls-i03-eiger16m_xrc_209", "beamline": "i03", "facility": "DLS"}
    v, _ = values_of(p, onto)
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.97625353)
    assert v["mmcat_collection.detector_distance"] == pytest.approx(391.228417)  # 0.391228 m
    assert v["mmcat_collection.beam_centre_x_px"] == pytest.approx(1005.45341)
    assert v["mmcat_collection.beam_centre_y_px"] == pytest.approx(1050.75240)
    assert v["mmcat_collection.exposure_time"] == pytest.approx(0.004)
    assert v["mmcat_collection.number_of_images"] == 240  # shape of the virtual dataset
    assert v["mmcat_collection.oscillation_start"] == 0.0  # a grid scan: omega does not move
    assert v["mmcat_collection.oscillation_width"] == 0.0
    assert v["diffrn_detector.type"] == "Eiger 16M"
    assert v["diffrn_detector.detector"] == "Pixel"
    assert v["mmcat_detector.sensor_thickness"] == pytest.approx(450.0)
    assert v["mmcat_detector.pixel_size_x"] == pytest.approx(75.0)
    assert v["mmcat_detector.saturation_value"] == 46051
    assert v["mmcat_detector.underload_value"] == 0
    assert (v["mmcat_detector.size_fast"], v["mmcat_detector.size_slow"]) == (2068, 2162)
    assert v["mmcat_collection.transmission"] == pytest.approx(100.0)  # attenuator_transmission 1.0
    assert v["mmcat_collection.flux"] == pytest.approx(2.7047436e11)
    assert v["mmcat_collection.start_time"] == "2024-07-24T10:09:13+00:00"
    assert v["mmcat_collection.end_time"] == "2024-07-24T10:09:15+00:00"
    assert v["diffrn_source.pdbx_synchrotron_beamline"] == "i03"
    assert v["diffrn_source.pdbx_synchrotron_site"] == "Diamond Light Source"
    assert v["diffrn_source.type"] == "DIAMOND BEAMLINE i03"
    assert "mmcat_detector.bit_depth" not in v and "mmcat_detector.threshold_energy" not in v  # behind external links
    assert any("external links not followed" in n and "ntrigger" in n for n in p.notes)


def test_image_data_is_never_read(corpus_file, monkeypatch):
    read: list[str] = []
    original = h5py.Dataset.__getitem__

    def spy(self, args):
        read.append(self.name)
        return original(self, args)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    for rel in (EIGER, DLS):
        ADAPTER.parse(corpus_file(rel))
    assert read
    assert not [n for n in read if n.startswith("/entry/data/") or "flatfield" in n or "pixel_mask" in n], read


def _synthetic(path: Path) -> Path:
    """A small NXmx master written here: other units than the EIGER ones, and an external image link."""
    with h5py.File(path, "w") as f:
        e = f.create_group("entry")
        e.attrs["NX_class"] = "NXentry"
        e["definition"] = "NXmx"
        e["start_time"] = "2026-01-02T03:04:05Z"
        e["end_time"] = "2026-01-02T03:05:05Z"
        inst = e.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        inst["name"] = "BL-9 test beamline"
        beam = inst.create_group("beam")
        beam["incident_wavelength"] = np.float64(0.1)
        beam["incident_wavelength"].attrs["units"] = "nm"
        beam["incident_energy"] = np.float64(12.398)
        beam["incident_energy"].attrs["units"] = "keV"
        beam["incident_beam_size"] = np.array([50.0, 20.0])
        beam["incident_beam_size"].attrs["units"] = "um"
        beam["total_flux"] = np.float64(1e12)
        beam["total_flux"].attrs["units"] = "Hz"
        det = inst.create_group("detector")
        det["distance"] = np.float64(250.0)
        det["distance"].attrs["units"] = "mm"
        det["beam_center_x"] = np.float64(155.1)
        det["beam_center_x"].attrs["units"] = "mm"
        det["beam_center_y"] = np.float64(160.2)
        det["beam_center_y"].attrs["units"] = "mm"
        det["count_time"] = np.float64(5.0)
        det["count_time"].attrs["units"] = "fortnights"
        det["frame_time"] = np.float64(10.0)
        det["frame_time"].attrs["units"] = "ms"
        det["serial_number"] = "S-1"
        det["sensor_thickness"] = np.float64(1000.0)
        det["sensor_thickness"].attrs["units"] = "um"
        att = inst.create_group("attenuator")
        att["attenuator_transmission"] = np.float64(0.25)
        s = e.create_group("sample")
        s["name"] = "lyso-7"
        s["temperature"] = np.float64(100.0)
        s["temperature"].attrs["units"] = "K"
        t = s.create_group("transformations")
        t["omega"] = np.array([10.0, 10.2, 10.4, 10.6])
        t["omega"].attrs["units"] = "deg"
        t["phi"] = np.array([0.5])
        t["phi"].attrs["units"] = "rad"
        d = e.create_group("data")
        d["data_000001"] = h5py.ExternalLink("synthetic_data_000001.h5", "/entry/data/data")
    return path


def test_units_of_a_synthetic_master(tmp_path, onto):
    p = ADAPTER.parse(_synthetic(tmp_path / "synthetic.nxs"))
    v, _ = values_of(p, onto)
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(1.0)  # 0.1 nm
    assert v["mmcat_collection.photon_energy"] == pytest.approx(12.398)
    assert v["mmcat_collection.detector_distance"] == pytest.approx(250.0)
    assert v["mmcat_collection.beam_centre_x"] == pytest.approx(155.1)  # mm, not pixels
    assert "mmcat_collection.beam_centre_x_px" not in v
    assert v["mmcat_collection.frame_time"] == pytest.approx(0.01)
    assert "mmcat_collection.exposure_time" not in v
    assert any("'fortnights'" in n for n in p.notes)
    assert v["mmcat_collection.beam_size_x"] == pytest.approx(50.0)
    assert v["mmcat_collection.beam_size_y"] == pytest.approx(20.0)
    assert v["mmcat_collection.flux"] == pytest.approx(1e12)
    assert v["mmcat_collection.transmission"] == pytest.approx(25.0)
    assert v["mmcat_detector.sensor_thickness"] == pytest.approx(1000.0)
    assert v["mmcat_collection.oscillation_start"] == pytest.approx(10.0)
    assert v["mmcat_collection.oscillation_width"] == pytest.approx(0.2)  # from the omega array
    assert v["mmcat_collection.phi_start"] == pytest.approx(28.6478898)  # 0.5 rad
    assert v["diffrn.ambient_temp"] == pytest.approx(100.0)
    assert v["mmcat_sample.name"] == "lyso-7"
    assert v["diffrn_source.pdbx_synchrotron_beamline"] == "BL-9 test beamline"
    assert v["mmcat_collection.end_time"] == "2026-01-02T03:05:05+00:00"
    assert p.hints["sample"] == "lyso-7"


def test_missing_h5py_gives_an_install_hint(corpus_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(corpus_file(DLS))
    assert "pip install" in e.value.reason


# -- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", [EIGER, DLS])
def test_detects_masters(corpus_file, rel):
    f = corpus_file(rel)
    assert ADAPTER.detect(read_head(f), f.name)


def test_detects_nxs_by_name(tmp_path):
    f = _synthetic(tmp_path / "synthetic.nxs")
    assert ADAPTER.detect(read_head(f), f.name)
    assert b"NXmx" in read_head(f)
    assert ADAPTER.detect(read_head(f), "synthetic.h5")  # the NXmx definition is in the head
    assert not ADAPTER.detect(read_head(f).replace(b"NXmx", b"NXxx"), "synthetic.h5")


@pytest.mark.parametrize("rel", [
    "stream/hdf5plugin_eiger-4m_bslz4_uint32_diffraction_1frame.h5",
    "stream/dectris-h5testfiles_eiger2-500k_simread7_bslz4_uint16_data_000001.h5",
    "stream/ansto-simplonapi_eiger2-1m_dark_20frames_ANSTOtest_303_data_000001.h5",
    "detector/dls-i03_pilatus3-6m_fullcbf_smargon_0001.cbf.gz",
    "dials/dials_insulin_scaled.expt",
    "ispyb_xml/autoproc-1.1.7-20240123_esrf_2024.xml",
])
def test_does_not_claim_other_files(corpus_file, rel):
    f = corpus_file(rel)
    assert not ADAPTER.detect(read_head(f), f.name)


def test_data_file_named_like_a_master_is_not_claimed():
    assert not ADAPTER.detect(b"\x89HDF\r\n\x1a\n" + bytes(100), "x_master_data_000001.h5")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.text(max_size=30))
def test_detect_never_raises(head, name):
    assert ADAPTER.detect(head, name) in (True, False)
    assert ADAPTER.detect(b"\x89HDF\r\n\x1a\n" + head, name) in (True, False)


# -- damaged and wrong-kind input -----------------------------------------------------------------


@pytest.mark.parametrize("rel", ["stream/dectris-h5testfiles_eiger2-500k_simread7_bslz4_uint16_data_000001.h5",
                                 "dials/dials_insulin_scaled.expt", "ispyb_xml/edna-esrf-2011_autoproc_data.xml"])
def test_wrong_kind_is_a_parse_error(corpus_file, rel):
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(corpus_file(rel))
    assert e.value.adapter == "nxmx_master" and e.value.path == str(corpus_file(rel))


def test_truncated_file_names_file(corpus_file, tmp_path):
    cut = tmp_path / "cut_master.h5"
    cut.write_bytes(corpus_file(DLS).read_bytes()[:20_000])
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(cut)
    assert e.value.path == str(cut) and "cut_master.h5" in str(e.value)


def test_missing_file_is_a_parse_error(tmp_path):
    with pytest.raises(ParseError):
        ADAPTER.parse(tmp_path / "absent_master.h5")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_mutations_parse_or_fail_cleanly(corpus_file, tmp_path, onto, seed):
    for rel, n in ((DLS, 16), (EIGER, 4)):
        fuzz_adapter(ADAPTER, corpus_file(rel).read_bytes(), tmp_path / "m_master.h5", onto, seeds=[seed], n=n, nonempty=True)
