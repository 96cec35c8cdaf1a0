"""The filter language of ``mxcat query``, parsed once and translated for each catalogue.

::

    reflns.d_resolution_high < 2.0 and reflns.pdbx_CC_half > 0.9
    reflns_shell.outer.pdbx_CC_half >= 0.3 or not (symmetry.space_group_name_H-M = 'P 1')
    reflns.d_resolution_high < 0.2 nm                  # a unit after a number converts it
    mmcat_processing.pipeline in ('autoPROC', 'xia2')
    mmcat_processing.message ~ 'indexing'              # contains, ignoring case
    exists reflns.mmcat_ISa

Keys may be any name the ontology resolves (flat keys, DDL2 tags, ESRF ICAT names...); values
are validated and converted to the key's canonical unit before comparison. A condition holds for
a subject when one of its records satisfies it. The parser is a small recursive descent; input is
never evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mxcat.errors import ValidationError
from mxcat.ontology import Ontology


@dataclass(frozen=True, slots=True)
class Cmp:
    key: str
    op: str
    value: Any
    numeric: bool


@dataclass(frozen=True, slots=True)
class In:
    key: str
    values: tuple[Any, ...]
    numeric: bool


@dataclass(frozen=True, slots=True)
class Exists:
    key: str


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Any


Node = Cmp | In | Exists | And | Or | Not

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![A-Za-z_.])
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op><=|>=|==|!=|<|>|=|~)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_/][A-Za-z0-9_.\-/\[\]%*^]*)
    )""",
    re.X,
)
KEYWORDS = {"and", "or", "not", "in", "exists"}


class QueryError(ValidationError):
    """A query that cannot be parsed or whose values do not fit their keys."""

    def __init__(self, query: str, pos: int, reason: str) -> None:
        super().__init__("query", query, f"{reason} at position {pos}")
        self.pos = pos


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(text, pos, f"unexpected {text[pos:pos + 10]!r}")
        kind = m.lastgroup or ""
        val, start = m.group(kind), m.start(kind)
        if kind == "word" and val.lower() in KEYWORDS:
            kind, val = "kw", val.lower()
        out.append((kind, val, start))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str, onto: Ontology) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.onto = onto

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str, int]:
        tok = self.toks[self.i]
        if (kind and tok[0] != kind) or (value and tok[1] != value):
            want = value or kind
            got = tok[1] or "end of query"
            raise QueryError(self.text, tok[2], f"expected {want}, found {got!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.or_()
        self.take("end")
        return node

    def or_(self) -> Node:
        parts = [self.and_()]
        while self.peek()[:2] == ("kw", "or"):
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_(self) -> Node:
        parts = [self.not_()]
        while self.peek()[:2] == ("kw", "and"):
            self.take()
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def not_(self) -> Node:
        if self.peek()[:2] == ("kw", "not"):
            self.take()
            return Not(self.not_())
        return self.atom()

    def key(self) -> tuple[str, Any]:
        _, name, pos = self.take("word")
        try:
            key = self.onto.resolve(name)
        except ValidationError as err:
            raise QueryError(self.text, pos, f"{name}: {err.reason}") from err
        return key, self.onto.item(key)

    def value(self, key: str, item: Any) -> Any:
        kind, raw, pos = self.peek()
        if kind == "num":
            self.take()
            unit = None
            if self.peek()[0] == "word":
                unit = self.take()[1]
            v: Any = float(raw)
        elif kind == "str":
            self.take()
            v, unit = bytes(raw[1:-1], "utf-8").decode("unicode_escape"), None
        elif kind == "word":
            self.take()
            v, unit = raw, None
        else:
            raise QueryError(self.text, pos, f"expected a value, found {raw or 'end of query'!r}")
        try:
            return self.onto.validate(key, v, unit).value
        except ValidationError as err:
            raise QueryError(self.text, pos, f"{key}: {err.reason}") from err

    def atom(self) -> Node:
        kind, val, pos = self.peek()
        if kind == "punct" and val == "(":
            self.take()
            node = self.or_()
            self.take("punct", ")")
            return node
        if kind == "kw" and val == "exists":
            self.take()
            return Exists(self.key()[0])
        key, item = self.key()
        numeric = item.is_numeric
        kind, val, pos = self.peek()
        if kind == "kw" and val == "in":
            self.take()
            self.take("punct", "(")
            values = [self.value(key, item)]
            while self.peek()[:2] == ("punct", ","):
                self.take()
                values.append(self.value(key, item))
            self.take("punct", ")")
            return In(key, tuple(values), numeric)
        if kind == "kw" and val == "exists":
            self.take()
            return Exists(key)
        _, op, pos = self.take("op")
        op = "=" if op == "==" else op
        if op == "~" and numeric:
            raise QueryError(self.text, pos, f"~ (contains) needs a text key; {key} is numeric")
        if op == "~":
            kind, raw, vpos = self.take()
            if kind not in ("str", "word", "num"):
                raise QueryError(self.text, vpos, "expected a text after ~")
            text = raw[1:-1] if kind == "str" else raw
            return Cmp(key, op, text, False)
        if not numeric and op in ("<", "<=", ">", ">="):
            if item.kind != "datetime":
                raise QueryError(self.text, pos, f"{op} needs a numeric or date key; {key} is text")
        return Cmp(key, op, self.value(key, item), numeric)


def parse(text: str, onto: Ontology) -> Node:
    """Parse a filter expression into a tree of :class:`Cmp`, :class:`In`, :class:`Exists`, And/Or/Not."""
    if not text or not text.strip():
        raise QueryError(text, 0, "empty query")
    return _Parser(text, onto).parse()


SQL_OPS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "=": "=", "!=": "!="}


def to_sql(node: Node, subject_col: str = "s.subject_id") -> tuple[str, list[Any]]:
    """A WHERE clause over the embedded catalogue's ``records`` table (see :mod:`mxcat.sinks.embedded`)."""
    if isinstance(node, And | Or):
        parts = [to_sql(p, subject_col) for p in node.parts]
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(p[0] for p in parts) + ")", [a for p in parts for a in p[1]]
    if isinstance(node, Not):
        sql, args = to_sql(node.part, subject_col)
        return f"(NOT {sql})", args
    base = f"EXISTS (SELECT 1 FROM records r WHERE r.subject_id = {subject_col} AND r.key = ?"
    if isinstance(node, Exists):
        return base + ")", [node.key]
    col = "r.value"
    if isinstance(node, In):
        return base + f" AND {col} IN ({','.join('?' * len(node.values))}))", [node.key, *node.values]
    if node.op == "~":
        return base + " AND typeof(r.value) = 'text' AND r.value LIKE ? ESCAPE '\\')", [node.key, "%" + _like(node.value) + "%"]
    return base + f" AND {col} {SQL_OPS[node.op]} ?)", [node.key, node.value]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


MONGO_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "=": "$eq", "!=": "$ne"}


def to_mongo(node: Node) -> dict[str, Any]:
    """A MongoDB filter over subject documents whose fields are the nested canonical keys."""
    if isinstance(node, And):
        return {"$and": [to_mongo(p) for p in node.parts]}
    if isinstance(node, Or):
        return {"$or": [to_mongo(p) for p in node.parts]}
    if isinstance(node, Not):
        return {"$nor": [to_mongo(node.part)]}
    if isinstance(node, Exists):
        return {node.key: {"$exists": True}}
    field_ = f"{node.key}.value"
    if isinstance(node, In):
        return {field_: {"$in": list(node.values)}}
    if node.op == "~":
        return {field_: {"$regex": re.escape(str(node.value)), "$options": "i"}}
    if node.op == "!=":
        return {"$and": [{node.key: {"$exists": True}}, {field_: {"$ne": node.value}}]}
    return {field_: {MONGO_OPS[node.op]: node.value}}
