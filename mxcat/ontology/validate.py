"""Validate and normalise values against their mmCAT definitions.

For each flat key a small compiled rule is built once: the value kind, the canonical unit, the
hard range (violations are errors), the advisory range (violations are warnings), the enumeration
and the type's regular expression. Numbers given in another unit are converted to the canonical
unit (see :mod:`mxcat.ontology.units`). CIF conventions are honoured on string input: a trailing
standard uncertainty ``1.234(5)`` is dropped, ``?`` and ``.`` are missing values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from mxcat.errors import ValidationError
from mxcat.ontology.model import ItemDef, RangeSet
from mxcat.ontology.units import UnitError, Units

if TYPE_CHECKING:
    from mxcat.ontology.core import Ontology

_ESD = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\(\d+\)$")
_FLEX_DT = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2}):(\d{1,2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class Normalised:
    """A value that passed validation, in the canonical unit of its key."""

    key: str
    value: float | int | str
    unit: str | None
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class BatchResult:
    """Outcome of validating many values: the good ones are kept, the bad ones say why."""

    accepted: list[Normalised] = field(default_factory=list)
    rejected: list[ValidationError] = field(default_factory=list)

    @property
    def warnings(self) -> list[tuple[str, str]]:
        return [(n.key, w) for n in self.accepted for w in n.warnings]


@dataclass(slots=True)
class _Rule:
    key: str
    item: ItemDef
    kind: str
    hard: RangeSet | None
    advisory: RangeSet | None
    enum: dict[str, str] | None
    """normalised spelling -> canonical spelling"""
    enum_ci: bool
    regex: re.Pattern[str] | None


class Validator:
    """Validates (key, value, unit) triples; build one per ontology and reuse it."""

    def __init__(self, ontology: Ontology) -> None:
        self.ontology = ontology
        self.units: Units = ontology.units
        self._rules: dict[str, _Rule] = {}

    def _rule(self, key: str) -> _Rule:
        rule = self._rules.get(key)
        if rule is not None:
            return rule
        item, _selector = self.ontology.lookup(key)
        canonical = self.ontology.flat_key(item.name, _selector)
        primitive, construct = self.ontology.types.get(item.type_code, ("char", ".*"))
        enum: dict[str, str] | None = None
        enum_ci = primitive == "uchar"
        if item.enumeration:
            enum = {(v.lower() if enum_ci else v): v for v in item.enumeration}
        regex = None
        if item.kind in ("string", "datetime") and construct not in (".*", ""):
            try:
                regex = re.compile(construct, re.DOTALL)
            except re.error:
                regex = None  # reported by lint; validation must not fail on a curator's regex
        rule = _Rule(
            key=canonical,
            item=item,
            kind=item.kind,
            hard=item.hard_range,
            advisory=item.advisory_range,
            enum=enum,
            enum_ci=enum_ci,
            regex=regex,
        )
        self._rules[key] = rule
        return rule

    def validate(self, key: str, value: Any, unit: str | None = None) -> Normalised:
        """Check one value and return it normalised; raise :class:`ValidationError` with the reason."""
        rule = self._rule(key)
        k = rule.kind
        if k == "float" or k == "int":
            return self._number(rule, value, unit)
        if unit is not None and unit not in ("", "none"):
            raise ValidationError(rule.key, value, f"a {k} value takes no unit (got {unit!r})")
        if k == "datetime":
            if isinstance(value, str) and rule.regex is not None and rule.regex.fullmatch(value.strip()) is None:
                raise ValidationError(rule.key, value, f"does not match the form of type {rule.item.type_code!r}")
            return Normalised(rule.key, _datetime(rule.key, value), None)
        return self._string(rule, value)

    def validate_many(self, values: Iterable[tuple[str, Any, str | None]]) -> BatchResult:
        """Validate a batch; each bad value is rejected alone and the rest is kept."""
        out = BatchResult()
        for key, value, unit in values:
            try:
                out.accepted.append(self.validate(key, value, unit))
            except ValidationError as err:
                out.rejected.append(err)
        return out

    def _number(self, rule: _Rule, value: Any, unit: str | None) -> Normalised:
        key = rule.key
        if isinstance(value, bool):
            raise ValidationError(key, value, "a boolean is not a number")
        if isinstance(value, str):
            x = _parse_number(key, value)
        elif isinstance(value, (int, float)):
            x = value
        else:
            try:
                x = float(value)  # numpy scalars and friends
            except (TypeError, ValueError):
                raise ValidationError(key, value, f"expected a number, got {type(value).__name__}") from None
        if isinstance(x, float) and not math.isfinite(x):
            raise ValidationError(key, value, "not a finite number")
        canonical = rule.item.units or "none"
        if unit is not None and unit != "" and unit != canonical:
            try:
                scale, offset = self.units.factor(unit, canonical)
            except UnitError as err:
                raise ValidationError(key, value, str(err)) from err
            if scale != 1.0 or offset != 0.0:
                x = float(f"{x * scale + offset:.12g}")
        if rule.kind == "int":
            if isinstance(x, float):
                if not x.is_integer():
                    raise ValidationError(key, value, "expected an integer")
                x = int(x)
        else:
            x = float(x)
        if rule.hard is not None and not rule.hard.contains(x):
            raise ValidationError(key, value, f"out of range: must be {rule.hard} {_u(rule.item.units)}".rstrip())
        warnings: tuple[str, ...] = ()
        if rule.advisory is not None and not rule.advisory.contains(x):
            warnings = (f"unusual value {x:g}: expected {rule.advisory} {_u(rule.item.units)}".rstrip(),)
        if rule.enum is not None and str(x) not in rule.enum and _intstr(x) not in rule.enum:
            raise ValidationError(key, value, f"not one of {', '.join(rule.enum.values())}")
        return Normalised(key, x, rule.item.units, warnings)

    def _string(self, rule: _Rule, value: Any) -> Normalised:
        key = rule.key
        if isinstance(value, (bytes, bytearray)):
            raise ValidationError(key, value, "expected text, got bytes")
        if isinstance(value, (dict, list, tuple, set)):
            raise ValidationError(key, value, f"expected text, got {type(value).__name__}")
        s = str(value).strip()
        if not s:
            raise ValidationError(key, value, "empty value")
        if rule.enum is not None:
            canon = rule.enum.get(s.lower() if rule.enum_ci else s)
            if canon is None:
                raise ValidationError(key, value, f"not one of {', '.join(rule.enum.values())}")
            s = canon
        elif rule.regex is not None and rule.regex.fullmatch(s) is None:
            raise ValidationError(key, value, f"does not match the form of type {rule.item.type_code!r}")
        return Normalised(key, s, None)


def _u(code: str | None) -> str:
    return "" if code in (None, "none") else code


def _intstr(x: float | int) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _parse_number(key: str, s: str) -> float | int:
    t = s.strip()
    if t in ("?", "."):
        raise ValidationError(key, s, "missing value (CIF null)")
    m = _ESD.match(t)
    if m:
        t = m.group(1)
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        raise ValidationError(key, s, "not a number") from None


def _datetime(key: str, value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str):
        raise ValidationError(key, value, f"expected a date/time, got {type(value).__name__}")
    s = value.strip()
    if re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}", s):
        try:
            return date(*(int(x) for x in s.split("-"))).isoformat()
        except ValueError as err:
            raise ValidationError(key, value, f"not a valid date: {err}") from None
    m = _FLEX_DT.match(s)
    if m:
        y, mo, d, h, mi = (int(g) for g in m.groups())
        try:
            return datetime(y, mo, d, h, mi).isoformat()
        except ValueError as err:
            raise ValidationError(key, value, f"not a valid date/time: {err}") from None
    try:
        return datetime.fromisoformat(s.replace(" ", "T", 1) if "T" not in s and " " in s else s).isoformat()
    except ValueError:
        pass
    try:
        return date.fromisoformat(s).isoformat()
    except ValueError:
        pass
    if re.fullmatch(r"\d{4}(-\d{1,2})?", s):
        return s  # a year or a month: PDBx's flexible dates allow them
    raise ValidationError(key, value, "not an ISO 8601 date/time")
