"""Unit spellings and conversion to the canonical (PDBx) unit of each item.

The dictionary's crosswalk (``_mmcat_unit``) says how each PDBx unit code is spelled for pint, UCUM,
ICAT and SciCat. Any of those spellings, or anything pint understands, is accepted on input. A
conversion is worked out with pint once per (input spelling, canonical code) pair and cached as a
scale and an offset, so that validating a value costs a multiplication, not a pint call.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from mxcat.ontology.model import UnitDef

if TYPE_CHECKING:
    import pint


NON_CONVERTIBLE = frozenset({"counts", "pixels", "arbitrary"})
"""Unit codes that only equal themselves: pint would let a count become a percent."""


class UnitError(ValueError):
    """A unit is unknown or does not convert to the canonical unit."""


@functools.cache
def registry() -> pint.UnitRegistry:
    """The shared pint registry, created on first use (it takes about 0.1 s)."""
    import pint

    ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    ureg.define("photon = [] = ph")
    return ureg


class Units:
    """The crosswalk plus a cache of conversion factors."""

    def __init__(self, units: dict[str, UnitDef]) -> None:
        self.units = units
        self._alias: dict[str, str] = {}
        self._alias_ci: dict[str, str] = {}
        for code, u in units.items():
            for spelling in (code, u.pint, u.ucum, u.icat, u.scicat):
                if spelling:
                    self._alias.setdefault(spelling, code)
            for word in (code, u.icat_full_name):
                # case does not matter for words (Angstroms), but it does for symbols (mGy vs MGy)
                if word and len(word) > 3 and word.replace("_", " ").replace(" ", "").isalpha():
                    self._alias_ci.setdefault(word.lower(), code)
        self._factors: dict[tuple[str, str], tuple[float, float]] = {}

    def code_for(self, spelling: str) -> str | None:
        """The unit code for a spelling found in the crosswalk, or None."""
        s = spelling.strip()
        return self._alias.get(s) or self._alias_ci.get(s.lower())

    def pint_spelling(self, code_or_spelling: str) -> str:
        code = self.code_for(code_or_spelling)
        if code is not None:
            u = self.units[code]
            if not u.pint:
                raise UnitError(f"unit {code!r} has no physical definition and cannot be converted")
            return u.pint
        return code_or_spelling

    def factor(self, given: str, canonical: str) -> tuple[float, float]:
        """(scale, offset) with ``canonical_value = given_value * scale + offset``."""
        key = (given, canonical)
        hit = self._factors.get(key)
        if hit is not None:
            return hit
        code = self.code_for(given)
        if code == canonical:
            result = (1.0, 0.0)
        elif code in NON_CONVERTIBLE or canonical in NON_CONVERTIBLE:
            raise UnitError(f"unit {given!r} does not convert to {canonical!r}")
        else:
            result = self._pint_factor(given, canonical)
        self._factors[key] = result
        return result

    def _pint_factor(self, given: str, canonical: str) -> tuple[float, float]:
        import pint

        ureg = registry()
        src = self.pint_spelling(given)
        dst = self.pint_spelling(canonical)
        try:
            zero = ureg.Quantity(0.0, src).to(dst).magnitude
            one = ureg.Quantity(1.0, src).to(dst).magnitude
        except pint.errors.DimensionalityError as err:
            raise UnitError(f"unit {given!r} does not convert to {canonical!r}") from err
        except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError) as err:
            raise UnitError(f"unknown unit {given!r}") from err
        except Exception as err:  # noqa: BLE001 - pint's parser raises many kinds (TokenError, ...)
            raise UnitError(f"cannot read unit {given!r}") from err
        return (float(one - zero), float(zero))

    def spelling(self, code: str | None, system: str) -> str:
        """How *system* (``pint``, ``ucum``, ``icat``, ``scicat``) spells a unit code."""
        if code is None:
            return ""
        u = self.units.get(code)
        if u is None:
            return code
        value = getattr(u, system, None)
        return value if value is not None else ""
