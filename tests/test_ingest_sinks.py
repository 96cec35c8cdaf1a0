"""`mxcat ingest … --sink icat|scicat|icatplus` end to end: a real corpus file, the CLI, the outbox,
and the reference ICAT and SciCat servers over HTTP or RabbitMQ's STOMP plugin."""

from __future__ import annotations

import json
import shutil
from xml.etree import ElementTree

import pytest

from tests import stomp_broker as sb
from tests.icat_server import IcatServer
from tests.scicat_server import SciCatServer
from tests.test_cli import run

XML = "ispyb_xml/autoproc-1.1.7-20221123_esrf_2023_staraniso.xml"
SUBJECT = ["--beamline", "ID30A-1", "--proposal", "MX2532", "--session", "20261121", "--sample", "lyso1",
           "--dataset", "lyso1_1_1"]


@pytest.fixture()
def xml_file(tmp_path, corpus):
    p = tmp_path / "autoproc.xml"
    shutil.copy(corpus / XML, p)
    return p


def configure(tmp_path, monkeypatch, name: str, sink_type: str, options: str) -> None:
    cfg = tmp_path / "mxcat.yaml"
    cfg.write_text(f"version: 1\nfacility: ESRF\noutbox:\n  path: {tmp_path}/outbox.sqlite\nsinks:\n"
                   f"  embedded:\n    type: embedded\n    options:\n      path: {tmp_path}/catalogue.sqlite\n"
                   f"  {name}:\n    type: {sink_type}\n    enabled: false\n    options:\n{options}")
    monkeypatch.setenv("MXCAT_CONFIG", str(cfg))


def ingest(capsys, path, sink: str) -> dict:
    code, out, err = run(["ingest", str(path), *SUBJECT, "--sink", sink, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_ingest_to_icat(tmp_path, monkeypatch, capsys, data_dir, xml_file):
    srv = IcatServer(facility="ESRF", users={("simple", "mxcat"): "secret"}).start()
    try:
        monkeypatch.setenv("MXCAT_TEST_ICAT_PW", "secret")
        configure(tmp_path, monkeypatch, "archive", "icat",
                  f"      url: {srv.url}\n      username: mxcat\n      password_env: MXCAT_TEST_ICAT_PW\n"
                  "      facility: ESRF\n      create_parameter_types: true\n")
        s = ingest(capsys, xml_file, "icat")  # by type: the one configured icat sink
        assert s["sinks"] == ["archive"] and s["stored"] > 50 and s["waiting"] == 0
        assert s["delivered"] == s["stored"]
        processed = srv.rows("Dataset")
        assert len(processed) >= 2 and all("lyso1_1_1" in d["name"] for d in processed)
        n_params = srv.count("DatasetParameter")
        assert n_params > 40
        requests = srv.request_count
        # login, lookups, parameter types, investigation, sample, raw + 2 processed datasets, parameters:
        # a couple of dozen requests for the file's ~100 values, not one per value
        assert requests <= 25 and srv.requests["POST /icat/entityManager"] <= 8
        again = ingest(capsys, xml_file, "archive")  # the same file again: nothing new anywhere
        assert again["stored"] == 0 and srv.count("DatasetParameter") == n_params
        assert srv.request_count == requests
    finally:
        srv.stop()


@pytest.mark.parametrize("api", ["v3", "v4"])
def test_ingest_to_scicat(tmp_path, monkeypatch, capsys, data_dir, xml_file, api):
    with SciCatServer() as srv:
        user, (password, _) = next(iter(srv.users.items()))
        monkeypatch.setenv("MXCAT_TEST_SCICAT_PW", password)
        configure(tmp_path, monkeypatch, "scicat", "scicat",
                  f"      url: {srv.url}\n      api: {api}\n      username: {user}\n"
                  "      password_env: MXCAT_TEST_SCICAT_PW\n      owner_group: mx\n"
                  "      contact_email: mx@example.org\n")
        s = ingest(capsys, xml_file, "scicat")
        assert s["sinks"] == ["scicat"] and s["delivered"] == s["stored"] > 50 and s["waiting"] == 0
        derived = [d for d in srv.datasets.values() if d.get("inputDatasets")]
        assert len(derived) >= 2
        sm = derived[0]["scientificMetadata"]
        assert any("d_resolution_high" in k for k in sm) and all({"value", "unit"} <= set(v) for v in sm.values())


def test_ingest_to_icatplus(tmp_path, monkeypatch, capsys, data_dir, xml_file):
    problem = sb.broker_problem()
    if problem:
        pytest.skip(problem)
    names = sb.QueueNames()
    ingest_q, update_q = names.new("cli-ingest"), names.new("cli-update")
    consumer = sb.Consumer(f"/queue/{ingest_q}")
    try:
        monkeypatch.setenv("MXCAT_TEST_STOMP_PW", sb.PASSCODE)
        configure(tmp_path, monkeypatch, "icatplus", "icatplus",
                  f"      brokers: ['{sb.HOST}:{sb.PORT}']\n      login: {sb.LOGIN}\n"
                  "      passcode_env: MXCAT_TEST_STOMP_PW\n"
                  f"      dataset_queue: /queue/{ingest_q}\n      update_queue: /queue/{update_q}\n"
                  f"      state_path: {tmp_path}/icatplus.sqlite\n")
        s = ingest(capsys, xml_file, "icatplus")
        assert s["sinks"] == ["icatplus"] and s["delivered"] == s["stored"] > 50 and s["waiting"] == 0
        got = consumer.settle(quiet=0.5)
        assert len(got) >= 2  # one dataset message per processed dataset
        root = ElementTree.fromstring(got[0].body)
        assert root.tag.startswith("{http://www.esrf.fr/icat}")
        params = {p.findtext("{*}name") for p in root.iter("{http://www.esrf.fr/icat}parameter")}
        assert any(n and n.startswith("MXAutoproc") for n in params)
    finally:
        consumer.close()
        names.cleanup()


def test_unknown_sink_is_a_config_error(tmp_path, monkeypatch, capsys, data_dir, xml_file):
    configure(tmp_path, monkeypatch, "scicat", "scicat", "      url: http://127.0.0.1:9\n      owner_group: mx\n"
              "      contact_email: mx@example.org\n")
    code, _, err = run(["ingest", str(xml_file), *SUBJECT, "--sink", "icat"], capsys)
    assert code == 3 and "--sink icat" in err and "scicat (scicat)" in err


def test_use_sinks_by_name_or_unique_type(tmp_path, data_dir):
    from mxcat.client import Catalogue
    from mxcat.config import Config, SinkConfig
    from mxcat.errors import ConfigError

    opts = {"url": "http://127.0.0.1:9", "owner_group": "mx", "contact_email": "mx@example.org"}
    cfg = Config(version=1, sinks={"embedded": SinkConfig(type="embedded", options={"path": str(tmp_path / "c.sqlite")}),
                        "a": SinkConfig(type="scicat", enabled=False, options=opts),
                        "b": SinkConfig(type="scicat", enabled=False, options=opts)})
    with Catalogue(cfg) as cat:
        assert cat.sink_names == ["embedded"]
        assert cat.use_sinks(["b", "embedded", "b"]) == ["b", "embedded"] and cat.sink_names == ["b", "embedded"]
        with pytest.raises(ConfigError, match="several sinks have that type"):
            cat.use_sinks(["scicat"])
        assert cat.use_sinks(["embedded"]) == ["embedded"]  # a type with one sink, or its name
