"""Configuration: one versioned YAML file, validated with pydantic, layered with environment and command line.

Precedence: command line > environment (``MXCAT_*``) > file > defaults. The file is ``--config``,
else ``$MXCAT_CONFIG``, else ``~/.config/mxcat/config.yaml`` when it exists. Unknown keys are
errors that name the key and the file. Each sink type validates its own options (its ``Options``
model). Secrets never sit in the file: an option ``X_env`` names an environment variable and
``X_file`` a file readable by its owner only, and the value arrives as option ``X`` when the sink
is created. ``mxcat config show`` masks anything that looks secret.

Environment variables: ``MXCAT_DATA_DIR`` (default location of the outbox and the embedded
catalogue), ``MXCAT_FACILITY``, ``MXCAT_BEAMLINE``, ``MXCAT_OUTBOX_PATH``, ``MXCAT_OUTBOX_SYNCHRONOUS``,
``MXCAT_DELIVERY_BATCH_SIZE``, ``MXCAT_DELIVERY_LEASE``, ``MXCAT_QUERY_SINK``, and
``MXCAT_SINK_<NAME>_<OPTION>`` for one option of one configured sink.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mxcat.errors import ConfigError

SECRET_WORDS = ("password", "secret", "token", "uri", "key", "credential")


def data_dir() -> Path:
    if os.environ.get("MXCAT_DATA_DIR"):
        return Path(os.environ["MXCAT_DATA_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mxcat"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OutboxConfig(_Model):
    path: Path | None = None
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"


class DeliveryConfig(_Model):
    batch_size: int = Field(2000, ge=1, le=100_000)
    lease: float = Field(60.0, gt=0)
    backoff_initial: float = Field(1.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)
    jitter: float = Field(0.5, ge=0, le=1)


class SinkConfig(_Model):
    type: str
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)


class Config(_Model):
    version: Literal[1]
    facility: str | None = None
    beamline: str | None = None
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    sinks: dict[str, SinkConfig] = Field(default_factory=dict)
    query_sink: str | None = None
    source: str | None = Field(None, exclude=True)

    @field_validator("sinks")
    @classmethod
    def _names(cls, v: dict[str, SinkConfig]) -> dict[str, SinkConfig]:
        for name in v:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"sink name {name!r} must be letters, digits, - or _")
        return v

    def resolved(self) -> Config:
        """A copy with defaults filled in (data directory paths, the embedded sink)."""
        c = self.model_copy(deep=True)
        if c.outbox.path is None:
            c.outbox.path = data_dir() / "outbox.sqlite"
        if not c.sinks:
            c.sinks = {"embedded": SinkConfig(type="embedded", options={"path": str(data_dir() / "catalogue.sqlite")})}
        for s in c.sinks.values():
            if s.type == "embedded" and "path" not in s.options:
                s.options["path"] = str(data_dir() / "catalogue.sqlite")
        if c.query_sink is None:
            c.query_sink = next((n for n, s in c.sinks.items() if s.enabled and s.type in ("embedded", "mongodb")), None)
        if c.query_sink is not None and c.query_sink not in c.sinks:
            raise ConfigError(f"query_sink {c.query_sink!r} is not a configured sink", key="query_sink", path=c.source)
        return c


def _locate(explicit: str | Path | None) -> Path | None:
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError("configuration file not found", path=p)
        return p
    if os.environ.get("MXCAT_CONFIG"):
        p = Path(os.environ["MXCAT_CONFIG"]).expanduser()
        if not p.is_file():
            raise ConfigError("configuration file named by MXCAT_CONFIG not found", path=p)
        return p
    default = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "mxcat" / "config.yaml"
    return default if default.is_file() else None


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"cannot set {dotted}: {p} is not a section", key=dotted)
    d[parts[-1]] = value


ENV = {
    "MXCAT_FACILITY": "facility",
    "MXCAT_BEAMLINE": "beamline",
    "MXCAT_OUTBOX_PATH": "outbox.path",
    "MXCAT_OUTBOX_SYNCHRONOUS": "outbox.synchronous",
    "MXCAT_DELIVERY_BATCH_SIZE": "delivery.batch_size",
    "MXCAT_DELIVERY_LEASE": "delivery.lease",
    "MXCAT_QUERY_SINK": "query_sink",
}


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate the configuration (file, then environment, then *overrides*)."""
    file = _locate(path)
    raw: dict[str, Any] = {"version": 1}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"not valid YAML{where}: {getattr(err, 'problem', err)}", path=file) from err
        except OSError as err:
            raise ConfigError(f"cannot read: {err}", path=file) from err
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("the configuration must be a mapping", path=file)
        if "version" not in loaded:
            raise ConfigError("missing 'version: 1'", key="version", path=file)
        raw = loaded
    for var, dotted in ENV.items():
        if os.environ.get(var):
            _set(raw, dotted, os.environ[var])
    sinks = raw.get("sinks") or {}
    for var, value in os.environ.items():
        if var.startswith("MXCAT_SINK_") and isinstance(sinks, dict):
            rest = var[len("MXCAT_SINK_"):].lower()
            for name in sinks:
                prefix = name.lower().replace("-", "_") + "_"
                if rest.startswith(prefix):
                    _set(raw, f"sinks.{name}.options.{rest[len(prefix):]}", value)
    for dotted, value in (overrides or {}).items():
        _set(raw, dotted, value)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(msg, key=key, path=file or "<environment/defaults>") from err
    cfg.source = str(file) if file else None
    return cfg


def secret_from(options: dict[str, Any], *, where: str) -> dict[str, Any]:
    """Resolve ``X_env`` / ``X_file`` options into ``X``; check that secret files are private."""
    out = dict(options)
    for opt in list(options):
        if opt.endswith("_env"):
            name = opt[:-4]
            var = options[opt]
            if not os.environ.get(var):
                raise ConfigError(f"environment variable {var} (for {name}) is not set", key=f"{where}.{opt}")
            out[name] = os.environ[var]
            del out[opt]
        elif opt.endswith("_file"):
            name = opt[:-5]
            p = Path(options[opt]).expanduser()
            try:
                st = p.stat()
            except OSError as err:
                raise ConfigError(f"secret file for {name} not readable: {err.strerror}", key=f"{where}.{opt}", path=p) from err
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"secret file for {name} is readable by group or others: chmod 600 it", key=f"{where}.{opt}", path=p)
            out[name] = p.read_text(encoding="utf-8").strip()
            del out[opt]
    return out


def is_secret(option: str) -> bool:
    o = option.lower()
    if o.endswith(("_env", "_file")):
        return False
    return any(w in o for w in SECRET_WORDS)


def masked(cfg: Config) -> dict[str, Any]:
    """The configuration as a dict with secrets masked, for display."""
    d = cfg.model_dump(mode="json")
    for s in d.get("sinks", {}).values():
        for k in list(s.get("options", {})):
            if is_secret(k):
                s["options"][k] = "********"
    return d
