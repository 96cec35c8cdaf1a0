"""Configuration: versioned YAML, unknown keys named with their file, layering, secrets, the deploy sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mxcat.client import Catalogue
from mxcat.config import load_config, masked, secret_from
from mxcat.errors import ConfigError
from mxcat.sinks import create

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_deploy_sample_loads_and_matches_the_code(data_dir):
    cfg = load_config(REPO / "deploy" / "config.yaml")
    assert cfg.version == 1 and cfg.source.endswith("deploy/config.yaml")
    assert set(cfg.sinks) == {"embedded", "mongo", "icat", "icatplus", "scicat"}
    assert [n for n, s in cfg.sinks.items() if s.enabled] == ["embedded"]
    # every option of the sample is known to its sink type
    for s in cfg.sinks.values():
        from mxcat.sinks import sink_types

        model = sink_types()[s.type].load().Options
        model.model_validate(s.options)
    assert cfg.resolved().query_sink == "embedded"


def test_defaults_without_a_file(data_dir):
    cfg = load_config().resolved()
    assert cfg.outbox.path == data_dir / "outbox.sqlite"
    assert cfg.sinks["embedded"].options["path"] == str(data_dir / "catalogue.sqlite")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("version: 1\noutbox:\n  pathh: /tmp/x\n", "outbox.pathh"),
        ("version: 1\ndelivery:\n  batch_size: 0\n", "delivery.batch_size"),
        ("version: 2\n", "version"),
        ("outbox: {}\n", "version"),
        ("version: 1\nsinks:\n  e:\n    type: embedded\n    colour: red\n", "sinks.e.colour"),
    ],
)
def test_bad_keys_are_named_with_the_file(tmp_path, data_dir, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert err.value.key == key and err.value.path == str(p)
    assert str(p) in str(err.value)


def test_yaml_errors_give_the_line(tmp_path, data_dir):
    p = write(tmp_path, "version: 1\noutbox:\n  path: [unclosed\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(p)


def test_unknown_sink_type_and_options_are_refused(tmp_path, data_dir):
    p = write(tmp_path, "version: 1\nsinks:\n  x:\n    type: carrier-pigeon\n")
    with Catalogue.open(p) as cat, pytest.raises(ConfigError, match="known: embedded"):
        cat.sink("x")
    with pytest.raises(ConfigError) as err:
        create("e", "embedded", {"path": "/tmp/c.sqlite", "colour": "red"})
    assert err.value.key == "sinks.e.options.colour"


def test_precedence_command_line_over_environment_over_file(tmp_path, data_dir, monkeypatch):
    p = write(tmp_path, "version: 1\ndelivery:\n  batch_size: 10\n  lease: 5\n")
    monkeypatch.setenv("MXCAT_DELIVERY_BATCH_SIZE", "20")
    cfg = load_config(p)
    assert cfg.delivery.batch_size == 20 and cfg.delivery.lease == 5
    cfg = load_config(p, {"delivery.batch_size": 30})
    assert cfg.delivery.batch_size == 30
    monkeypatch.setenv("MXCAT_CONFIG", str(p))
    assert load_config().source == str(p)
    monkeypatch.setenv("MXCAT_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="MXCAT_CONFIG"):
        load_config()


def test_per_sink_option_from_the_environment(tmp_path, data_dir, monkeypatch):
    p = write(tmp_path, "version: 1\nsinks:\n  mongo:\n    type: mongodb\n    options:\n      uri_env: X\n")
    monkeypatch.setenv("MXCAT_SINK_MONGO_DATABASE", "other")
    assert load_config(p).sinks["mongo"].options["database"] == "other"


def test_secrets_come_from_the_environment_or_private_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_URI", "mongodb://user:hunter2@host/")
    assert secret_from({"uri_env": "MY_URI", "database": "d"}, where="s") == {"uri": "mongodb://user:hunter2@host/", "database": "d"}
    with pytest.raises(ConfigError, match="not set"):
        secret_from({"uri_env": "NOT_SET_ANYWHERE"}, where="s")
    f = tmp_path / "uri"
    f.write_text("mongodb://u:p@h/\n")
    os.chmod(f, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        secret_from({"uri_file": str(f)}, where="s")
    os.chmod(f, 0o600)
    assert secret_from({"uri_file": str(f)}, where="s") == {"uri": "mongodb://u:p@h/"}


def test_show_masks_secrets(tmp_path, data_dir):
    p = write(tmp_path, "version: 1\nsinks:\n  m:\n    type: mongodb\n    options:\n      uri_env: X\n      password: oops-in-file\n")
    d = masked(load_config(p))
    assert d["sinks"]["m"]["options"]["password"] == "********"
    assert d["sinks"]["m"]["options"]["uri_env"] == "X"


def test_sink_options_given_as_text_arrive_converted(monkeypatch):
    """Options from MXCAT_SINK_<NAME>_<OPTION> are text: the sink gets the validated, typed values."""
    s = create("f", "flaky", {"fail_first": "2", "failure_rate": "0.25"})
    assert s.fail_first == 2 and s.failure_rate == 0.25
    with pytest.raises(ConfigError, match="sinks.f.options.fail_first"):
        create("f", "flaky", {"fail_first": "two"})
