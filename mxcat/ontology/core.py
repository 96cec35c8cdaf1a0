"""The loaded mmCAT ontology: items by name and flat key, reverse lookup of mapped names, validation.

Flat keys are what catalogues store: ``category.item`` for single-row categories and for table
columns, ``category.selector.item`` for one chosen row of a flattened loop, e.g.
``reflns_shell.outer.pdbx_CC_half`` where ``outer`` is a value of ``_reflns_shell.mmcat_shell_class``.
Any mapped name (an ISPyB column with its row condition, an ESRF ICAT parameter, an NXmx path, ...)
resolves back to its flat key through :meth:`Ontology.resolve`.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mxcat.errors import OntologyError, UnknownKeyError
from mxcat.ontology.loader import RawSet, kind_of, read_set
from mxcat.ontology.model import CategoryDef, Component, ItemDef, Mapping, UnitDef
from mxcat.ontology.units import Units
from mxcat.ontology.validate import BatchResult, Normalised, Validator


def normalise_selector(selector: str | dict[str, Any] | None) -> str | None:
    """``{'b': 1, 'a': 'x'}`` or ``'b=1; a=x'`` -> ``'a=x;b=1'`` (order-free, whitespace-free)."""
    if selector is None or selector == "":
        return None
    if isinstance(selector, dict):
        pairs = [(str(k), str(v)) for k, v in selector.items()]
    else:
        pairs = []
        for part in str(selector).replace(",", ";").split(";"):
            if not part.strip():
                continue
            k, _, v = part.partition("=")
            pairs.append((k.strip(), v.strip()))
    return ";".join(f"{k}={v}" for k, v in sorted(pairs))


class Ontology:
    """All mmCAT definitions, indexed for lookup, resolution and validation."""

    def __init__(self, raw: RawSet) -> None:
        self.raw = raw
        self.components: list[Component] = raw.components
        self.categories: dict[str, CategoryDef] = raw.categories
        self.items: dict[str, ItemDef] = raw.items
        self.types = raw.types
        self.schemes = raw.schemes
        unit_defs: dict[str, UnitDef] = dict(raw.units)
        for code, detail in raw.unit_details.items():
            unit_defs.setdefault(code, UnitDef(code, detail, None, None, None, None, None)).detail = detail
        self.units = Units(unit_defs)
        for item in self.items.values():
            item.kind = kind_of(item.type_code, self.types)
            cat = self.categories.get(item.category)
            if cat is not None and not item.entity_explicit:
                item.entity = cat.entity
        self.orphan_mappings: list[Mapping] = []
        """Mappings outside save frames that name no known item (lint reports them)."""
        for m in raw.loose_mappings:
            target = self.items.get(m.item)
            if target is not None:
                target.mappings.append(m)
            else:
                self.orphan_mappings.append(m)
        self._keys: dict[str, tuple[ItemDef, str | None]] = {}
        self._keys_ci: dict[str, str] = {}
        self._build_keys()
        self._targets_any: dict[str, list[Mapping]] = {}
        for item in self.items.values():
            for m in item.mappings:
                self._targets_any.setdefault(m.target.lower(), []).append(m)
        self._validator: Validator | None = None

    def _build_keys(self) -> None:
        for item in self.items.values():
            cat = self.categories.get(item.category)
            plain = f"{item.category}.{item.item}"
            self._keys[plain] = (item, None)
            if cat is not None and cat.storage == "flattened" and item.name != cat.selector_item:
                for sel in cat.selector_values:
                    self._keys[f"{item.category}.{sel}.{item.item}"] = (item, sel)
        self._keys_ci = {k.lower(): k for k in self._keys}

    # -- lookup -----------------------------------------------------------------------------------

    def __contains__(self, key: str) -> bool:
        return key in self._keys or key.lower() in self._keys_ci

    def __len__(self) -> int:
        return len(self.items)

    def keys(self) -> Iterator[str]:
        """Every flat key, flattened rows included."""
        return iter(self._keys)

    def lookup(self, key: str) -> tuple[ItemDef, str | None]:
        """(item definition, selector value) for a flat key or a DDL2 tag; raises UnknownKeyError."""
        hit = self._keys.get(key)
        if hit is not None:
            return hit
        k = key[1:] if key.startswith("_") else key
        exact = self._keys_ci.get(k.lower())
        if exact is not None:
            return self._keys[exact]
        raise UnknownKeyError(key, suggestions=difflib.get_close_matches(k, self._keys.keys(), n=3, cutoff=0.75))

    def item(self, key: str) -> ItemDef:
        """The item definition behind a flat key or DDL2 tag."""
        return self.lookup(key)[0]

    def flat_key(self, name: str, selector: str | None = None) -> str:
        """``_reflns_shell.pdbx_CC_half`` + ``outer`` -> ``reflns_shell.outer.pdbx_CC_half``."""
        category, item = name.lstrip("_").split(".", 1)
        return f"{category}.{selector}.{item}" if selector else f"{category}.{item}"

    def unflatten(self, key: str) -> tuple[str, str | None, str]:
        """``reflns_shell.outer.pdbx_CC_half`` -> (``reflns_shell``, ``outer``, ``pdbx_CC_half``)."""
        item, selector = self.lookup(key)
        return item.category, selector, item.item

    def canonical_key(self, key: str) -> str:
        """The spelling of *key* as the dictionary defines it (case and leading underscore)."""
        item, selector = self.lookup(key)
        return self.flat_key(item.name, selector)

    # -- resolution of other vocabularies ---------------------------------------------------------

    def resolve(
        self,
        name: str,
        *,
        scheme: str | None = None,
        selector: str | dict[str, Any] | None = None,
    ) -> str:
        """The flat key for a mapped name (ISPyB column, ESRF ICAT name, NXmx path, ...) or a key.

        ``resolve("MXAutoprocIntegrationScaling_outer_cc_half")`` and
        ``resolve("AutoProcScalingStatistics.ccHalf", selector="scalingStatisticsType=outerShell")``
        both give ``reflns_shell.outer.pdbx_CC_half``. A name that needs a selector and has none
        raises with the possible selectors listed.
        """
        if scheme is None and selector is None and (name in self or name.lstrip("_") in self):
            return self.canonical_key(name)
        return self.resolve_mapping(name, scheme=scheme, selector=selector).key

    def resolve_mapping(
        self,
        name: str,
        *,
        scheme: str | None = None,
        selector: str | dict[str, Any] | None = None,
    ) -> Mapping:
        """The mapping row for a name in another vocabulary (see :meth:`resolve`)."""
        if scheme is not None and scheme not in self.schemes:
            raise UnknownKeyError(scheme, suggestions=sorted(self.schemes), reason="unknown mapping scheme")
        sel = normalise_selector(selector)
        candidates = [m for m in self._targets_any.get(name.lower(), []) if scheme is None or m.scheme == scheme]
        matching = [m for m in candidates if normalise_selector(m.target_selector) == sel]
        if not matching and sel is None:
            matching = candidates
        keys = sorted({m.key for m in matching})
        if len(keys) == 1:
            units = {m.units for m in matching}
            if len(units) > 1:
                opts = sorted(f"{m.scheme}: {m.units or 'canonical unit'}" for m in matching)
                raise UnknownKeyError(name, suggestions=opts, reason="its vocabularies store it in different units; give the scheme")
            return matching[0]
        if keys:
            opts = sorted({f"{m.target_selector} -> {m.key}" for m in matching})
            raise UnknownKeyError(name, suggestions=opts, reason="ambiguous without a selector")
        if candidates:
            opts = sorted({m.target_selector or "(none)" for m in candidates})
            raise UnknownKeyError(name, suggestions=opts, reason=f"no mapping with selector {sel!r}")
        close = difflib.get_close_matches(name.lstrip("_"), self._keys.keys(), n=3, cutoff=0.8)
        close += difflib.get_close_matches(name.lower(), self._targets_any.keys(), n=3, cutoff=0.8)
        raise UnknownKeyError(name, suggestions=close, reason="not a known key or mapped name")

    def mappings(self, scheme: str | None = None) -> Iterator[Mapping]:
        """All mapping rows, optionally of one scheme."""
        for item in self.items.values():
            for m in item.mappings:
                if scheme is None or m.scheme == scheme:
                    yield m

    def search(self, text: str) -> list[ItemDef]:
        """Items whose name, label, description or mapped names contain all words of *text*."""
        words = text.lower().split()
        out = []
        for item in self.items.values():
            hay = " ".join(
                [item.name, item.label or "", item.description] + [m.target for m in item.mappings]
            ).lower()
            if all(w in hay for w in words):
                out.append(item)
        return out

    # -- validation -------------------------------------------------------------------------------

    @property
    def validator(self) -> Validator:
        if self._validator is None:
            self._validator = Validator(self)
        return self._validator

    def validate(self, key: str, value: Any, unit: str | None = None) -> Normalised:
        """Validate and normalise one value (see :class:`mxcat.ontology.validate.Validator`)."""
        return self.validator.validate(key, value, unit)

    def validate_many(self, values: Iterable[tuple[str, Any, str | None]]) -> BatchResult:
        return self.validator.validate_many(values)

    @property
    def version(self) -> str:
        """Versions of all components, ``name=version`` joined by commas."""
        return ",".join(f"{c.name}={c.version}" for c in self.components)


@functools.cache
def _load_default() -> Ontology:
    return Ontology(read_set(None))


def load(paths: Iterable[str | Path] | None = None) -> Ontology:
    """Load mmCAT: the shipped dictionaries by default (cached), or the given files/directories."""
    if paths is None:
        return _load_default()
    paths = list(paths)
    if not paths:
        raise OntologyError("no dictionary files given")
    return Ontology(read_set(paths))
