"""The one error tree of mxcat, split by what the caller should do about it.

::

    MxcatError                      base; every error mxcat raises on purpose
    ├── ConfigError                 fix the configuration (names the key and the file)
    ├── OntologyError               fix the dictionary (names the file and line)
    ├── ParseError                  the input file is malformed (adapter, file, line, reason)
    ├── ValidationError             a value breaks its ontology definition (key, value, reason)
    │   └── UnknownKeyError         the key is not in mmCAT (lists close matches)
    ├── SinkError
    │   ├── SinkUnavailable         transient: keep the record, retry later
    │   └── SinkRejected            permanent: dead-letter the record with the sink's reason
    └── InternalError               a bug in mxcat: report it

The command line maps each class to an exit code (:data:`EXIT_CODES`) and prints a one-line message;
``--debug`` shows the traceback. Exception chains are kept (``raise ... from err``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class MxcatError(Exception):
    """Base of every error mxcat raises on purpose."""

    exit_code = 1


class ConfigError(MxcatError):
    """The configuration is wrong: an unknown key, a bad value, a missing file or secret."""

    exit_code = 3

    def __init__(self, reason: str, *, key: str | None = None, path: str | Path | None = None) -> None:
        self.reason = reason
        self.key = key
        self.path = str(path) if path is not None else None
        where = ", ".join(p for p in (f"file {self.path}" if self.path else "", f"key {key}" if key else "") if p)
        super().__init__(f"{where}: {reason}" if where else reason)


class OntologyError(MxcatError):
    """A dictionary file cannot be loaded or is inconsistent."""

    exit_code = 4

    def __init__(self, reason: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.path = str(path) if path is not None else None
        self.line = line
        loc = self.path or ""
        if line is not None:
            loc += f":{line}"
        super().__init__(f"{loc}: {reason}" if loc else reason)


class ParseError(MxcatError):
    """An input file is malformed, truncated or of the wrong kind."""

    exit_code = 5

    def __init__(
        self,
        reason: str,
        *,
        adapter: str | None = None,
        path: str | Path | None = None,
        line: int | None = None,
    ) -> None:
        self.reason = reason
        self.adapter = adapter
        self.path = str(path) if path is not None else None
        self.line = line
        loc = self.path or "<input>"
        if line is not None:
            loc += f":{line}"
        prefix = f"[{adapter}] " if adapter else ""
        super().__init__(f"{prefix}{loc}: {reason}")


class ValidationError(MxcatError):
    """A value breaks the definition of its ontology key (type, unit, range, enumeration)."""

    exit_code = 6

    def __init__(self, key: str, value: Any, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"{key} = {value!r}: {reason}")


class UnknownKeyError(ValidationError):
    """The key is not defined in mmCAT."""

    def __init__(
        self, key: str, value: Any = None, suggestions: list[str] | None = None, *, reason: str = "unknown key"
    ) -> None:
        self.suggestions = suggestions or []
        hint = f" (did you mean {', '.join(self.suggestions)}?)" if self.suggestions else ""
        super().__init__(key, value, f"{reason}{hint}")
        if value is None:
            self.args = (f"{key}: {reason}{hint}",)


class SinkError(MxcatError):
    """A catalogue sink could not take records."""

    def __init__(self, reason: str, *, sink: str | None = None) -> None:
        self.reason = reason
        self.sink = sink
        super().__init__(f"sink {sink}: {reason}" if sink else reason)


class SinkUnavailable(SinkError):
    """Transient: the catalogue is down or busy. Records stay in the outbox and are retried."""

    exit_code = 7


class SinkRejected(SinkError):
    """Permanent: the catalogue refused the records. They go to the dead-letter state with this reason."""

    exit_code = 8


class InternalError(MxcatError):
    """A bug in mxcat. Please report it with the output of ``--debug``."""

    exit_code = 70


EXIT_CODES: dict[type[MxcatError], int] = {
    cls: cls.exit_code
    for cls in (
        MxcatError,
        ConfigError,
        OntologyError,
        ParseError,
        ValidationError,
        UnknownKeyError,
        SinkUnavailable,
        SinkRejected,
        InternalError,
    )
}
"""Exit code of the command line for each error class (0 is success, 2 is a usage error)."""
