"""``aiaas-db lint``: the schema conventions, checked in change sets and in a live catalog.

Change sets are parsed with sqlglot (PostgreSQL dialect) statement by statement; the up scripts
are replayed into a model of the resulting schema (tables, columns, primary keys), so rules about
the final shape (primary key, classification coverage) see ``ALTER TABLE`` changes too. With a
DSN the live catalog is checked by the same rules. Rules (stable ids; ``--output json`` carries
them)::

    AIAAS-L000 unparsed-statement      warning  sqlglot could not parse it: only keyword checks ran
    AIAAS-L001 table-plural            table names are plural (``usage_events``)
    AIAAS-L002 snake-case              names are lower snake_case (tables, columns, indexes, ...)
    AIAAS-L003 primary-key             a primary key led by ``<singular>_id``
    AIAAS-L004 index-name              ``idx_<table>_<columns>``
    AIAAS-L005 unique-name             ``uq_<table>_<columns>`` (constraints and unique indexes)
    AIAAS-L006 foreign-key-name        ``fk_<table>_<columns>``
    AIAAS-L007 check-name              ``ck_<table>_<what>``
    AIAAS-L008 timestamptz             ``timestamptz`` only, never ``timestamp`` without time zone
    AIAAS-L009 no-serial               no ``serial``/``bigserial``: identity columns or uuid
    AIAAS-L010 change-set-files        up/down pairs, ``YYYYMMDDHHMM_slug`` names, header flags
    AIAAS-L011 destructive-unmarked    destructive DDL in an up script needs the marker
    AIAAS-L012 identifier-too-long     warning  PostgreSQL truncates names over 63 bytes
    AIAAS-L013 table-unclassified      every table has a classification entity
    AIAAS-L014 column-unclassified     every column of a classified table has an entry
    AIAAS-L015 restricted-unprotected  restricted columns: hmac digest (text) or aes-gcm (bytea)
    AIAAS-L016 retention-mismatch      retention as the lifecycle jobs enforce it
    AIAAS-L017 classification-stale    entries naming no table or column; a malformed file

Where the suffix of a conventional name is fixed by columns (``idx_``, ``uq_``, ``fk_``), the
full conventional name is required unless it would exceed PostgreSQL's 63 bytes; then any
``<prefix>_<table>_...`` name is accepted. Destructive DDL is ``DROP TABLE``, ``DROP SCHEMA``,
``DROP DATABASE``, ``ALTER TABLE ... DROP COLUMN``, ``ALTER COLUMN ... TYPE``, ``TRUNCATE`` and
``DELETE``; down scripts undo by nature and are not held to the marker.

Explicit exceptions to the naming rules:

* partition children named ``<parent>_p<digits>`` (``usage_events_p20261126``) or
  ``<parent>_default`` need not be plural nor carry a primary key of their own (they inherit
  the parent's); in the catalog their inherited indexes and constraints are skipped too;
* the migrator's bookkeeping tables (``aiaas_migration_ledger``, ``aiaas_migration_history``,
  ``schema_migrations`` and ``schema_migrations_<component>``, golang-migrate's naming) are not
  checked at all;
* an unnamed ``PRIMARY KEY`` is fine (PostgreSQL names it ``<table>_pkey``).

Statements sqlglot parses only as an opaque command are handled as follows: a multi-action
``ALTER TABLE`` is split into its actions and each is parsed alone; ``NULLS [NOT] DISTINCT`` is
dropped before a ``CREATE INDEX`` is parsed again; function, procedure, extension, grant and
similar statements that define no table shape are recognised by their leading keywords; anything
else (``DO`` blocks included) is reported as AIAAS-L000 with its file and line, and its text is
still searched for destructive keywords.

Classification rules (L013-L017) run when a classification is given: the platform's own
(``aiaas_db/schemas/classification.yml``) when the platform's sets are linted, or
``--classification FILE`` for a user's sets.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from aiaas_db._changesets import (
    FILE_PATTERN,
    ChangeSetSource,
    DirectorySource,
    PackageSource,
    _parse_header,
    load_change_sets,
    normalise_script,
)
from aiaas_db._classification import RETENTION_POLICY, Classification
from aiaas_db._errors import ChangeSetError
from aiaas_db._sqlsplit import split_statements

if TYPE_CHECKING:
    import psycopg
    from sqlglot import exp

__all__ = [
    "BOOKKEEPING_TABLES",
    "RULES",
    "LintReport",
    "LintRule",
    "LintViolation",
    "lint_catalog",
    "lint_change_sets",
    "lint_classification",
]

Severity = Literal["error", "warning"]


@attrs.frozen
class LintRule:
    """One convention ``aiaas-db lint`` enforces."""

    id: str = attrs.field(validator=attrs.validators.matches_re(r"AIAAS-L\d{3}"))
    name: str = attrs.field(validator=attrs.validators.matches_re(r"[a-z][a-z0-9-]*"))
    summary: str
    severity: Severity = attrs.field(
        default="error", validator=attrs.validators.in_(("error", "warning"))
    )


_RULE_LIST: Final = (
    LintRule("AIAAS-L000", "unparsed-statement", "sqlglot could not parse a statement", "warning"),
    LintRule("AIAAS-L001", "table-plural", "table names are plural"),
    LintRule("AIAAS-L002", "snake-case", "names are lower snake_case"),
    LintRule("AIAAS-L003", "primary-key", "a primary key led by <singular>_id"),
    LintRule("AIAAS-L004", "index-name", "indexes are named idx_<table>_<columns>"),
    LintRule("AIAAS-L005", "unique-name", "unique constraints/indexes are uq_<table>_<columns>"),
    LintRule("AIAAS-L006", "foreign-key-name", "foreign keys are fk_<table>_<columns>"),
    LintRule("AIAAS-L007", "check-name", "check constraints are ck_<table>_<what>"),
    LintRule("AIAAS-L008", "timestamptz", "timestamptz only, never timestamp without time zone"),
    LintRule("AIAAS-L009", "no-serial", "no serial/bigserial columns"),
    LintRule("AIAAS-L010", "change-set-files", "up/down pairs, version format, header flags"),
    LintRule("AIAAS-L011", "destructive-unmarked", "destructive DDL needs -- aiaas:destructive"),
    LintRule("AIAAS-L012", "identifier-too-long", "names over 63 bytes are truncated", "warning"),
    LintRule("AIAAS-L013", "table-unclassified", "every table has a classification entity"),
    LintRule("AIAAS-L014", "column-unclassified", "every column of a classified table has one"),
    LintRule("AIAAS-L015", "restricted-unprotected", "restricted columns are hashed or encrypted"),
    LintRule("AIAAS-L016", "retention-mismatch", "retention as the lifecycle jobs enforce it"),
    LintRule("AIAAS-L017", "classification-stale", "classification entries match the schema"),
)
#: Every rule by id.
RULES: Final[Mapping[str, LintRule]] = {r.id: r for r in _RULE_LIST}

#: The migrator's own tables: never linted.
BOOKKEEPING_TABLES: Final = frozenset(
    {"aiaas_migration_ledger", "aiaas_migration_history", "schema_migrations"}
)
_BOOKKEEPING_PATTERN: Final = re.compile(r"schema_migrations(_[a-z0-9_]+)?|aiaas_migration_\w+")
_SNAKE: Final = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_MAX_IDENT: Final = 63
_SERIALS: Final = frozenset({"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"})
_IRREGULAR: Final = {"people": "person", "children": "child", "criteria": "criterion"}


def _is_bookkeeping(table: str) -> bool:
    return table in BOOKKEEPING_TABLES or bool(_BOOKKEEPING_PATTERN.fullmatch(table))


def singular(word: str) -> str | None:
    """The singular of the last word of a snake_case plural name, or None when not plural."""
    head, _, last = word.rpartition("_")
    prefix = f"{head}_" if head else ""
    if last in _IRREGULAR:
        return prefix + _IRREGULAR[last]
    if last.endswith("ies") and len(last) > 3:
        return prefix + last[:-3] + "y"
    if last.endswith(("sses", "xes", "zes", "ches", "shes", "uses")):
        return prefix + last[:-2]
    if last.endswith("s") and not last.endswith(("ss", "us", "is")) and len(last) > 1:
        return prefix + last[:-1]
    return None


@attrs.frozen
class LintViolation:
    """One broken rule: where, and what to do about it."""

    rule: str = attrs.field(validator=attrs.validators.in_(RULES))
    location: str
    message: str

    @property
    def name(self) -> str:
        return RULES[self.rule].name

    @property
    def severity(self) -> Severity:
        return RULES[self.rule].severity

    def to_dict(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity,
            "location": self.location,
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"{self.location}: {self.rule} {self.name}: {self.message}"


def _sort_key(v: LintViolation) -> tuple[str, int, str, str]:
    where, _, line = v.location.rpartition(":")
    if where and line.isdigit():
        return (where, int(line), v.rule, v.message)
    return (v.location, 0, v.rule, v.message)


def _sorted_violations(violations: Iterable[LintViolation]) -> tuple[LintViolation, ...]:
    return tuple(sorted(set(violations), key=_sort_key))


def _str_tuple(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(items)


@attrs.frozen
class LintReport:
    """Every violation found, sorted by place; ``checked`` says what was looked at."""

    violations: tuple[LintViolation, ...] = attrs.field(converter=_sorted_violations)
    checked: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    @property
    def errors(self) -> tuple[LintViolation, ...]:
        return tuple(v for v in self.violations if v.severity == "error")

    @property
    def warnings(self) -> tuple[LintViolation, ...]:
        return tuple(v for v in self.violations if v.severity == "warning")

    @property
    def ok(self) -> bool:
        """True when no rule of severity ``error`` is broken (warnings do not fail)."""
        return not self.errors

    def rules_broken(self) -> frozenset[str]:
        return frozenset(v.rule for v in self.violations)

    def __add__(self, other: LintReport) -> LintReport:
        return LintReport((*self.violations, *other.violations), (*self.checked, *other.checked))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": list(self.checked),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "violations": [v.to_dict() for v in self.violations],
        }


# -- the schema model --------------------------------------------------------------------------


@attrs.define
class _Column:
    name: str
    type: str
    location: str


@attrs.define
class _Table:
    name: str
    location: str
    columns: dict[str, _Column] = attrs.Factory(dict)
    primary_key: tuple[str, ...] | None = None
    parent: str | None = None
    opaque: bool = False  # columns copied with LIKE: not all columns known


class _Checker:
    """The naming and type rules, shared by the change-set and the catalog linters."""

    def __init__(self, *, catalog: bool = False) -> None:
        self.violations: list[LintViolation] = []
        self.catalog = catalog

    def add(self, rule: str, location: str, message: str) -> None:
        self.violations.append(LintViolation(rule, location, message))

    def name(self, name: str, what: str, location: str) -> None:
        if self.catalog and len(name.encode()) == _MAX_IDENT:
            # The most PostgreSQL keeps: the name in the DDL was probably longer.
            self.add(
                "AIAAS-L012",
                location,
                f"{what} {name!r} is {_MAX_IDENT} bytes, the most PostgreSQL keeps: it was "
                "probably truncated; give it a shorter name in its change set",
            )
            name = name.rstrip("_")
        if not _SNAKE.fullmatch(name):
            self.add(
                "AIAAS-L002",
                location,
                f"{what} {name!r} is not lower snake_case: rename it to "
                f"{_to_snake(name)!r} (lowercase letters, digits, single underscores; no quotes)",
            )
        if len(name.encode()) > _MAX_IDENT:
            self.add(
                "AIAAS-L012",
                location,
                f"{what} {name!r} is {len(name.encode())} bytes; PostgreSQL truncates it to "
                f"{name.encode()[:_MAX_IDENT].decode(errors='ignore')!r}: shorten it",
            )

    def table_name(self, name: str, parent: str | None, location: str) -> None:
        self.name(name, "table", location)
        if parent is not None:
            if not re.fullmatch(rf"{re.escape(parent)}_(p\d+|default)", name):
                self.add(
                    "AIAAS-L001",
                    location,
                    f"partition {name!r} of {parent!r}: name partitions {parent}_pYYYYMMDD "
                    f"(by their range) or {parent}_default",
                )
            return
        if singular(name) is None:
            self.add(
                "AIAAS-L001",
                location,
                f"table {name!r} is not plural: name tables for the collection "
                f"(e.g. {name}s), with the primary key {name}_id",
            )

    def column_type(self, table: str, column: str, type_text: str, location: str) -> None:
        t = type_text.strip().lower()
        if re.search(r"\btimestamp\b", t) and "with time zone" not in t:
            self.add(
                "AIAAS-L008",
                location,
                f"{table}.{column} is {type_text} (no time zone): use timestamptz "
                "(all times are UTC timestamptz)",
            )
        if t in _SERIALS:
            self.add(
                "AIAAS-L009",
                location,
                f"{table}.{column} is {t}: use bigint GENERATED ALWAYS AS IDENTITY (or uuid "
                "DEFAULT gen_random_uuid())",
            )

    def constraint(
        self,
        kind: Literal["unique", "foreign", "check", "primary", "exclude", "index"],
        name: str | None,
        table: str,
        columns: Sequence[str] | None,
        location: str,
    ) -> None:
        if kind in ("primary", "exclude"):
            if name is not None:
                self.name(name, "constraint", location)
            return
        rule, prefix, what = {
            "unique": ("AIAAS-L005", "uq", "unique constraint"),
            "foreign": ("AIAAS-L006", "fk", "foreign key"),
            "check": ("AIAAS-L007", "ck", "check constraint"),
            "index": ("AIAAS-L004", "idx", "index"),
        }[kind]
        expected = f"{prefix}_{table}_" + ("_".join(columns) if columns else "<what>")
        if name is None:
            self.add(
                rule,
                location,
                f"unnamed {what} on {table}"
                + (f" ({', '.join(columns)})" if columns else "")
                + f": name it {expected} (PostgreSQL would pick its own name)",
            )
            return
        self.name(name, what, location)
        if not name.startswith(f"{prefix}_{table}_") or len(name) == len(f"{prefix}_{table}_"):
            self.add(rule, location, f"{what} {name!r} on {table}: name it {expected}")
            return
        if columns and kind != "check" and len(expected) <= _MAX_IDENT and name != expected:
            self.add(
                rule,
                location,
                f"{what} {name!r} on {table} ({', '.join(columns)}): name it {expected}",
            )

    def primary_key(self, table: _Table) -> None:
        if table.parent is not None or table.opaque:
            return
        expected = f"{singular(table.name) or table.name}_id"
        if table.primary_key is None:
            self.add(
                "AIAAS-L003",
                table.location,
                f"table {table.name} has no primary key: add {expected} "
                "(uuid DEFAULT gen_random_uuid() or bigint GENERATED ALWAYS AS IDENTITY)",
            )
        elif table.primary_key[0] != expected:
            self.add(
                "AIAAS-L003",
                table.location,
                f"table {table.name}'s primary key is ({', '.join(table.primary_key)}): lead it "
                f"with {expected}",
            )


def _to_snake(name: str) -> str:
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    s = re.sub(r"[^a-z0-9]+", "_", s).strip("_")
    return s if s and s[0].isalpha() else f"x_{s}"


# -- classification ----------------------------------------------------------------------------


def lint_classification(
    classification: Classification,
    tables: Mapping[str, Mapping[str, str]],
    *,
    locations: Mapping[str, str] | None = None,
    require_all: bool = True,
) -> list[LintViolation]:
    """Classification rules over ``tables`` (table -> column -> type).

    ``require_all`` makes an unclassified table a violation (the platform's own schema);
    otherwise only tables the classification names are checked.
    """
    out: list[LintViolation] = []
    where = locations or {}
    origin = classification.origin or "classification"
    for table in sorted(tables):
        columns = tables[table]
        loc = where.get(table, table)
        entity = classification.for_table(table)
        if entity is None:
            if require_all:
                out.append(
                    LintViolation(
                        "AIAAS-L013",
                        loc,
                        f"table {table} is not classified: add an entity with table: {table} "
                        f"and every column to {origin}",
                    )
                )
            continue
        for column in sorted(columns):
            field = entity.field(column)
            if field is None:
                out.append(
                    LintViolation(
                        "AIAAS-L014",
                        f"{table}.{column}",
                        f"column {table}.{column} has no entry in entity {entity.name} of "
                        f"{origin}: add one (classification, protection, retention_days)",
                    )
                )
                continue
            ctype = columns[column].strip().lower()
            if field.classification == "restricted":
                if field.protection == "none":
                    out.append(
                        LintViolation(
                            "AIAAS-L015",
                            f"{table}.{column}",
                            f"restricted column {table}.{column} is unprotected: store a keyed "
                            "digest (protection: hmac, text) or ciphertext (protection: aes-gcm, "
                            "bytea), never the value",
                        )
                    )
                elif field.protection == "hmac" and ctype != "text":
                    out.append(
                        LintViolation(
                            "AIAAS-L015",
                            f"{table}.{column}",
                            f"{table}.{column} holds an hmac digest but is {ctype}: keyed "
                            "digests are text (hmac-sha256$<version>$<digest>)",
                        )
                    )
                elif field.protection == "aes-gcm" and ctype != "bytea":
                    out.append(
                        LintViolation(
                            "AIAAS-L015",
                            f"{table}.{column}",
                            f"{table}.{column} holds aes-gcm ciphertext but is {ctype}: "
                            "store ciphertext as bytea (nonce || ciphertext+tag)",
                        )
                    )
        out.extend(
            LintViolation(
                "AIAAS-L017",
                f"{table}.{field.column_name}",
                f"{origin} classifies {table}.{field.column_name}, which does not "
                "exist: remove the entry or fix its column name",
            )
            for field in entity.fields
            if field.column_name not in columns
        )
        if entity.retention_anchor is not None and entity.retention_anchor not in columns:
            out.append(
                LintViolation(
                    "AIAAS-L017",
                    loc,
                    f"retention_anchor {entity.retention_anchor} of {entity.name} is no column "
                    f"of {table}: name the column the retention counts from",
                )
            )
        policy = RETENTION_POLICY.get(table)
        if policy is not None:
            days, anchor = policy
            if entity.retention_days != days or entity.retention_anchor != anchor:
                out.append(
                    LintViolation(
                        "AIAAS-L016",
                        loc,
                        f"{entity.name} retention is {entity.retention_days} days from "
                        f"{entity.retention_anchor}; the lifecycle jobs enforce {days} days "
                        f"from {anchor}: set retention_days: {days}, retention_anchor: {anchor}",
                    )
                )
    out.extend(
        LintViolation(
            "AIAAS-L017",
            entity.table,
            f"{origin} classifies table {entity.table} ({entity.name}), which does "
            "not exist: remove the entity or fix its table name",
        )
        for entity in classification.entities
        if entity.table is not None and entity.table not in tables
    )
    return out


# -- change sets -------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs a warning for every statement it falls back on; we report those ourselves."""
    logger = logging.getLogger("sqlglot")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _parse(sql: str) -> Any:
    """sqlglot's tree of ``sql`` (an ``exp.Command`` when it fell back), None when it failed."""
    import sqlglot  # noqa: PLC0415 -- heavy: only lint pays for it

    try:
        with _quiet_sqlglot():
            return sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.SqlglotError:
        return None


def _strip_literals(text: str) -> str:
    """``text`` without string constants and quoted identifiers (keyword searches only)."""
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "''", text)


_DESTRUCTIVE_TEXT: Final = re.compile(
    r"\b(DROP\s+(?:TABLE|SCHEMA|DATABASE|COLUMN)|TRUNCATE|DELETE\s+FROM|"
    r"ALTER\s+COLUMN\s+\S+\s+(?:SET\s+DATA\s+)?TYPE)\b",
    re.IGNORECASE,
)
_OPAQUE_OK: Final = re.compile(
    r"(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE|AGGREGATE|EXTENSION|"
    r"(?:CONSTRAINT\s+)?TRIGGER|CAST|OPERATOR|COLLATION|POLICY|PUBLICATION|ROLE|STATISTICS)|"
    r"ALTER\s+(?:FUNCTION|PROCEDURE|EXTENSION|DEFAULT\s+PRIVILEGES|ROLE|POLICY|SEQUENCE)|"
    r"DROP\s+(?:FUNCTION|PROCEDURE|EXTENSION|TRIGGER|POLICY|AGGREGATE|CAST|OPERATOR)|"
    r"GRANT|REVOKE|SET|RESET|COMMENT|ANALYZE|VACUUM|REFRESH|SECURITY\s+LABEL|SELECT|NOTIFY|"
    r"LOCK|CALL)\b",
    re.IGNORECASE,
)
_FUNCTION_NAME: Final = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\s+(?:[\w$]+\.)?([\w$\"]+)", re.IGNORECASE
)
_ALTER_TABLE_HEAD: Final = re.compile(
    r"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?((?:[\w$]+|\"[^\"]+\")(?:\.(?:[\w$]+|\"[^\"]+\"))?)\s+",
    re.IGNORECASE,
)
_ALTER_ACTION_OK: Final = re.compile(
    r"(?:ENABLE|DISABLE|FORCE|NO\s+FORCE|OWNER\s+TO|SET\s*\(|RESET\s*\(|REPLICA\s+IDENTITY|"
    r"VALIDATE\s+CONSTRAINT|ATTACH\s+PARTITION|DETACH\s+PARTITION|CLUSTER\s+ON|SET\s+WITHOUT|"
    r"SET\s+(?:LOGGED|UNLOGGED|TABLESPACE|SCHEMA|ACCESS\s+METHOD)|INHERIT|NO\s+INHERIT|OF\s|"
    r"NOT\s+OF|DROP\s+CONSTRAINT|ALTER\s+CONSTRAINT|"
    r"ALTER\s+(?:COLUMN\s+)?[\w$\"]+\s+(?:SET|DROP|ADD|RESTART))\b",
    re.IGNORECASE,
)
_ADD_CONSTRAINT: Final = re.compile(
    r"ADD\s+(?:CONSTRAINT\s+([\w$\"]+)\s+)?(CHECK|UNIQUE|PRIMARY\s+KEY|FOREIGN\s+KEY|EXCLUDE)\b"
    r"(?:\s+NULLS\s+(?:NOT\s+)?DISTINCT)?\s*(?:\(([^()]*)\))?",
    re.IGNORECASE,
)
_RENAME_CONSTRAINT: Final = re.compile(
    r"RENAME\s+CONSTRAINT\s+[\w$\"]+\s+TO\s+([\w$\"]+)", re.IGNORECASE
)


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth, start, i, n = 0, 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            j = i + 1
            while j < n and not (text[j] == ch and (j + 1 >= n or text[j + 1] != ch)):
                j += 2 if text[j] == ch else 1
            i = j + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _ident(name: str) -> str:
    """An identifier as PostgreSQL stores it (unquoted names fold to lower case)."""
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name.lower()


def _node_name(node: Any) -> str:
    """The stored name of an Identifier/Table/Column node."""
    from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

    while isinstance(node, exp.Table | exp.Column | exp.Schema | exp.Ordered):
        node = node.this
    if isinstance(node, exp.Identifier):
        return str(node.this) if node.quoted else str(node.this).lower()
    return str(node.name if hasattr(node, "name") else node).lower()


def _columns_of(node: Any) -> tuple[str, ...] | None:
    """Plain column names of an index/constraint column list (None for expressions)."""
    from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

    if node is None:
        return None
    items = node if isinstance(node, list) else node.expressions
    names: list[str] = []
    for item in items:
        target = item.this if isinstance(item, exp.Ordered) else item
        if isinstance(target, exp.Column | exp.Identifier):
            names.append(_node_name(target))
        else:
            return None
    return tuple(names) or None


@attrs.define
class _File:
    label: str
    name: str
    text: str
    version: int
    kind: str


class _ChangeSetLinter(_Checker):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, _Table] = {}
        self.indexes: dict[str, tuple[str, bool, tuple[str, ...] | None]] = {}

    # -- statements -----------------------------------------------------------------------

    def lint_file(self, f: _File) -> None:
        text = normalise_script(f.text)
        _values, directives, _problems = _parse_header(text)
        marked = "aiaas:destructive" in directives
        cursor = 0
        for stmt in split_statements(text):
            offset = text.find(stmt, cursor)
            offset = cursor if offset < 0 else offset
            cursor = offset + len(stmt)
            line = text.count("\n", 0, offset) + 1
            loc = _Loc(f.label, line, stmt)
            self.statement(stmt, loc, up=f.kind == "up", marked=marked)

    def statement(self, stmt: str, loc: _Loc, *, up: bool, marked: bool) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        tree = _parse(stmt)
        if tree is not None and not isinstance(tree, exp.Command):
            self.expression(tree, loc, up=up, marked=marked)
            return
        head = stmt.lstrip()
        m = _ALTER_TABLE_HEAD.match(head)
        if m:
            table = _ident(m.group(1).split(".")[-1])
            for action in _split_top_level(head[m.end() :]):
                self.alter_action(table, m.group(0), action, loc, up=up, marked=marked)
            return
        if re.match(r"CREATE\s+(UNIQUE\s+)?INDEX\b", head, re.IGNORECASE):
            cleaned = re.sub(r"\bNULLS\s+(NOT\s+)?DISTINCT\b", "", head, flags=re.IGNORECASE)
            tree = _parse(cleaned)
            if tree is not None and not isinstance(tree, exp.Command):
                self.expression(tree, loc, up=up, marked=marked)
                return
        if _OPAQUE_OK.match(head):
            fm = _FUNCTION_NAME.match(head)
            if fm:
                self.name(_ident(fm.group(1)), "function", loc.at(fm.group(1)))
            return
        self.add(
            "AIAAS-L000",
            loc.here,
            f"sqlglot cannot parse this statement ({_first_words(head)} ...): the naming, type "
            "and classification rules did not see it; check it by hand or write it in a form "
            "sqlglot parses",
        )
        if up and not marked:
            dm = _DESTRUCTIVE_TEXT.search(_strip_literals(head))
            if dm:
                self._destructive(" ".join(dm.group(1).upper().split()), loc)

    def alter_action(
        self, table: str, head: str, action: str, loc: _Loc, *, up: bool, marked: bool
    ) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        tree = _parse(f"{head}{action}")
        if tree is not None and not isinstance(tree, exp.Command):
            self.expression(tree, loc, up=up, marked=marked)
            return
        cm = _ADD_CONSTRAINT.match(action)
        if cm:
            kind = " ".join(cm.group(2).upper().split())
            name = _ident(cm.group(1)) if cm.group(1) else None
            cols = (
                tuple(_ident(c.strip()) for c in cm.group(3).split(","))
                if cm.group(3) and kind != "CHECK"
                else None
            )
            mapped: dict[str, Literal["unique", "foreign", "check", "primary", "exclude"]] = {
                "CHECK": "check",
                "UNIQUE": "unique",
                "PRIMARY KEY": "primary",
                "FOREIGN KEY": "foreign",
                "EXCLUDE": "exclude",
            }
            self.constraint(mapped[kind], name, table, cols, loc.at(cm.group(1) or kind))
            if kind == "PRIMARY KEY" and cols and table in self.tables:
                self.tables[table].primary_key = cols
            return
        rm = _RENAME_CONSTRAINT.match(action)
        if rm:
            self.name(_ident(rm.group(1)), "constraint", loc.at(rm.group(1)))
            return
        if _ALTER_ACTION_OK.match(action):
            if up and not marked:
                dm = _DESTRUCTIVE_TEXT.search(_strip_literals(action))
                if dm:
                    self._destructive(" ".join(dm.group(1).upper().split()), loc)
            return
        self.add(
            "AIAAS-L000",
            loc.here,
            f"sqlglot cannot parse this ALTER TABLE {table} action ({_first_words(action)} ...): "
            "check it by hand or write it in a form sqlglot parses",
        )
        if up and not marked:
            dm = _DESTRUCTIVE_TEXT.search(_strip_literals(action))
            if dm:
                self._destructive(" ".join(dm.group(1).upper().split()), loc)

    def _destructive(self, what: str, loc: _Loc) -> None:
        self.add(
            "AIAAS-L011",
            loc.here,
            f"{what} in an up script without `-- aiaas:destructive` in its header: mark the "
            "script (the migrator then asks for confirmation before it drops data) or make the "
            "change additive",
        )

    def expression(self, tree: exp.Expression, loc: _Loc, *, up: bool, marked: bool) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        destructive: str | None = None
        if isinstance(tree, exp.Create):
            self.create(tree, loc)
        elif isinstance(tree, exp.Alter):
            destructive = self.alter(tree, loc, up=up)
        elif isinstance(tree, exp.Drop):
            kind = str(tree.args.get("kind") or "").upper()
            names = [
                _node_name(t) for t in tree.args.get("tables") or ([tree.this] if tree.this else [])
            ]
            if kind in ("TABLE", "SCHEMA", "DATABASE"):
                destructive = f"DROP {kind}"
            if up:
                for name in names:
                    if kind == "TABLE":
                        self.tables.pop(name, None)
                    elif kind == "INDEX":
                        self.indexes.pop(name, None)
        elif isinstance(tree, exp.TruncateTable):
            destructive = "TRUNCATE"
        elif isinstance(tree, exp.Delete):
            destructive = "DELETE"
        if destructive and up and not marked:
            self._destructive(destructive, loc)

    def create(self, tree: exp.Create, loc: _Loc) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        kind = str(tree.args.get("kind") or "").upper()
        if kind == "TABLE":
            self.create_table(tree, loc)
        elif kind == "INDEX":
            index = tree.this
            if not isinstance(index, exp.Index):
                return
            table = _node_name(index.args.get("table"))
            name_node = index.this
            name = _node_name(name_node) if name_node is not None else None
            params = index.args.get("params")
            cols = _columns_of(params.args.get("columns")) if params is not None else None
            unique = bool(tree.args.get("unique"))
            self.constraint(
                "unique" if unique else "index", name, table, cols, loc.at(name or "INDEX")
            )
            if name:
                self.indexes[name] = (table, unique, cols)
        elif kind in ("VIEW", "SEQUENCE", "TYPE", "TRIGGER", "SCHEMA", "FUNCTION", "PROCEDURE"):
            target = tree.this
            if target is not None:
                name = _node_name(target)
                self.name(name, kind.lower(), loc.at(name))

    def create_table(self, tree: exp.Create, loc: _Loc) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        schema = tree.this
        table_node = schema.this if isinstance(schema, exp.Schema) else schema
        name = _node_name(table_node)
        parent: str | None = None
        props = tree.args.get("properties")
        for prop in props.expressions if props is not None else ():
            if isinstance(prop, exp.PartitionedOfProperty):
                parent = _node_name(prop.this)
        table = _Table(name=name, location=loc.here, parent=parent)
        if _is_bookkeeping(name):
            return
        self.table_name(name, parent, loc.here)
        if tree.args.get("expression") is not None:  # CREATE TABLE ... AS
            table.opaque = True
        items = schema.expressions if isinstance(schema, exp.Schema) else []
        for item in items:
            if isinstance(item, exp.ColumnDef):
                self.column(table, item, loc)
            elif isinstance(item, exp.LikeProperty):
                table.opaque = True
            else:
                self.table_constraint(table, item, loc)
        self.tables[name] = table

    def column(self, table: _Table, col: exp.ColumnDef, loc: _Loc) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        name = _node_name(col.this)
        where = loc.at(name)
        kind = col.args.get("kind")
        type_text = kind.sql("postgres").lower() if kind is not None else ""
        self.name(name, "column", where)
        self.column_type(table.name, name, type_text, where)
        table.columns[name] = _Column(name, type_text, where)
        for cc in col.args.get("constraints") or []:
            ck = cc.args.get("kind")
            cname = _node_name(cc.this) if cc.this is not None else None
            cwhere = loc.at(cname) if cname else where
            if isinstance(ck, exp.PrimaryKeyColumnConstraint):
                table.primary_key = (name,)
                self.constraint("primary", cname, table.name, (name,), cwhere)
            elif isinstance(ck, exp.UniqueColumnConstraint):
                self.constraint("unique", cname, table.name, (name,), cwhere)
            elif isinstance(ck, exp.Reference):
                self.constraint("foreign", cname, table.name, (name,), cwhere)
            elif isinstance(ck, exp.CheckColumnConstraint):
                self.constraint("check", cname, table.name, None, cwhere)

    def table_constraint(self, table: _Table, item: exp.Expression, loc: _Loc) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        name: str | None = None
        node = item
        if isinstance(item, exp.Constraint):
            name = _node_name(item.this)
            node = item.expressions[0] if item.expressions else item
        where = loc.at(name) if name else loc.here
        if isinstance(node, exp.PrimaryKey):
            cols = _columns_of(node)
            table.primary_key = cols
            self.constraint("primary", name, table.name, cols, where)
        elif isinstance(node, exp.UniqueColumnConstraint):
            target = node.this
            cols = _columns_of(target) if isinstance(target, exp.Schema) else None
            self.constraint("unique", name, table.name, cols, where)
        elif isinstance(node, exp.ForeignKey):
            self.constraint("foreign", name, table.name, _columns_of(node), where)
        elif isinstance(node, exp.CheckColumnConstraint):
            self.constraint("check", name, table.name, None, where)
        elif isinstance(node, exp.ExcludeColumnConstraint):
            self.constraint("exclude", name, table.name, None, where)

    def alter(self, tree: exp.Alter, loc: _Loc, *, up: bool = True) -> str | None:
        """Check an ALTER and track its effect on the tables; a down script's ``DROP COLUMN``
        is checked but does not remove the column from the schema the later change sets see
        (as a down script's ``DROP TABLE`` does not remove the table)."""
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        kind = str(tree.args.get("kind") or "").upper()
        target = _node_name(tree.this)
        destructive: str | None = None
        if kind == "INDEX":
            for action in tree.args.get("actions") or []:
                if isinstance(action, exp.AlterRename):
                    new = _node_name(action.this)
                    on, unique, cols = self.indexes.pop(target, ("", False, None))
                    if on:
                        self.indexes[new] = (on, unique, cols)
                        self.constraint("unique" if unique else "index", new, on, cols, loc.at(new))
                    else:
                        self.name(new, "index", loc.at(new))
            return None
        if kind != "TABLE" or _is_bookkeeping(target):
            return None
        table = self.tables.get(target) or _Table(name=target, location=loc.here, opaque=True)
        for action in tree.args.get("actions") or []:
            if isinstance(action, exp.ColumnDef):
                self.column(table, action, loc)
            elif isinstance(action, exp.AddConstraint):
                for item in action.expressions:
                    self.table_constraint(table, item, loc)
            elif (
                isinstance(action, exp.Drop)
                and str(action.args.get("kind") or "").upper() == "COLUMN"
            ):
                destructive = "DROP COLUMN"
                for col in action.args.get("tables") or []:
                    if up:
                        table.columns.pop(_node_name(col), None)
            elif isinstance(action, exp.AlterColumn) and action.args.get("dtype") is not None:
                destructive = "ALTER COLUMN ... TYPE"
                col = _node_name(action.this)
                type_text = action.args["dtype"].sql("postgres").lower()
                self.column_type(table.name, col, type_text, loc.at(col))
                if col in table.columns:
                    table.columns[col].type = type_text
            elif isinstance(action, exp.RenameColumn):
                old, new = _node_name(action.this), _node_name(action.args.get("to"))
                self.name(new, "column", loc.at(new))
                if old in table.columns:
                    column = table.columns.pop(old)
                    column.name = new
                    table.columns[new] = column
            elif isinstance(action, exp.AlterRename):
                new = _node_name(action.this)
                self.table_name(new, table.parent, loc.here)
                self.tables.pop(target, None)
                table.name = new
                target = new
        if target in self.tables or not table.opaque:
            self.tables[target] = table
        return destructive


def _first_words(text: str, n: int = 4) -> str:
    return " ".join(text.split()[:n])


@attrs.frozen
class _Loc:
    """Where a statement starts; ``at(word)`` finds the line of a word inside it."""

    label: str
    line: int
    stmt: str

    @property
    def here(self) -> str:
        return f"{self.label}:{self.line}"

    def at(self, word: str) -> str:
        m = re.search(rf"(?<![\w$]){re.escape(word.strip(chr(34)))}(?![\w$])", self.stmt, re.I)
        line = self.line + (self.stmt.count("\n", 0, m.start()) if m else 0)
        return f"{self.label}:{line}"


# -- sources -----------------------------------------------------------------------------------


def _label(folder: object, fallback: str) -> str:
    """A folder as people find it: relative to the working directory when under it."""
    if isinstance(folder, Path):
        with contextlib.suppress(ValueError):
            return str(folder.resolve().relative_to(Path.cwd().resolve()))
        return str(folder)
    return fallback


def _source_files(source: ChangeSetSource | Path | str) -> tuple[str, list[tuple[str, str]]]:
    """(label prefix, [(file name, text)]) of a source."""
    if isinstance(source, str | Path):
        source = DirectorySource(Path(source))
    if isinstance(source, DirectorySource):
        if not source.path.is_dir():
            raise ChangeSetError(
                [f"{source.path} is not a directory (pass the folder holding the .sql files)"]
            )
        files = [
            (p.name, p.read_bytes().decode("utf-8", errors="replace"))
            for p in sorted(source.path.iterdir())
            if p.is_file() and p.name.endswith(".sql")
        ]
        return str(source.path), files
    if isinstance(source, PackageSource):
        root = resources.files(source.package)
        folder = root.joinpath(*source.subdir.split("/")) if source.subdir else root
        entries = sorted(folder.iterdir(), key=lambda e: e.name) if folder.is_dir() else []
        files = [
            (e.name, e.read_bytes().decode("utf-8", errors="replace"))
            for e in entries
            if e.is_file() and e.name.endswith(".sql")
        ]
        return _label(folder, source.origin), files
    sets = source.load()
    files = []
    for cs in sets:
        for script in (cs.up, cs.down, cs.check):
            if script is not None:
                files.append((script.name, script.sql))
    return source.origin, files


def lint_change_sets(
    sources: Iterable[ChangeSetSource | Path | str],
    *,
    classification: Classification | None = None,
    require_classified: bool = True,
) -> LintReport:
    """Lint the change sets of ``sources`` (applied in this order into one schema)."""
    linter = _ChangeSetLinter()
    checked: list[str] = []
    for source in sources:
        label, files = _source_files(source)
        checked.append(f"change sets: {label}")
        try:
            load_change_sets(files, origin=label)
        except ChangeSetError as exc:
            for problem in exc.problems:
                file_name = problem.split(":", 1)[0]
                where = f"{label}/{file_name}" if file_name.endswith(".sql") else label
                linter.add("AIAAS-L010", where, problem)
        parsed: list[_File] = []
        for name, text in files:
            m = FILE_PATTERN.match(name)
            if m is None or m.group("kind") == "check":
                continue
            parsed.append(
                _File(f"{label}/{name}", name, text, int(m.group("version")), m.group("kind"))
            )
        for f in sorted(parsed, key=lambda f: (f.version, f.kind != "up")):
            linter.lint_file(f)
    for table in linter.tables.values():
        linter.primary_key(table)
    violations = list(linter.violations)
    if classification is not None:
        checked.append(f"classification: {classification.origin or 'given'}")
        shapes = {
            t.name: {c.name: c.type for c in t.columns.values()}
            for t in linter.tables.values()
            if t.parent is None and not _is_bookkeeping(t.name)
        }
        locations = {t.name: t.location for t in linter.tables.values()}
        violations.extend(
            lint_classification(
                classification,
                {k: _ddl_types(v) for k, v in shapes.items()},
                locations=locations,
                require_all=require_classified,
            )
        )
    return LintReport(violations, checked)


def _ddl_types(columns: Mapping[str, str]) -> dict[str, str]:
    """sqlglot's type spelling -> the catalog's, for the types classification cares about."""
    return {name: ("text" if t in ("text", "varchar") else t) for name, t in columns.items()}


# -- the live catalog --------------------------------------------------------------------------

_SYSTEM: Final = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    " AND n.nspname NOT LIKE 'pg_temp_%' AND n.nspname NOT LIKE 'pg_toast_temp_%'"
)
_CATALOG_TABLES: Final = """
    SELECT n.nspname, c.relname, c.relispartition,
           (SELECT p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
             WHERE i.inhrelid = c.oid LIMIT 1)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND {system}
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
""".replace("{system}", _SYSTEM)
_CATALOG_COLUMNS: Final = """
    SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
           a.attidentity <> '' AS identity,
           EXISTS (SELECT 1 FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
                   WHERE d.refobjid = c.oid AND d.refobjsubid = a.attnum
                     AND d.classid = 'pg_class'::regclass AND s.relkind = 'S'
                     AND d.deptype = 'a') AS owns_sequence
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND {system}
""".replace("{system}", _SYSTEM)
_CATALOG_CONSTRAINTS: Final = """
    SELECT n.nspname, c.relname, con.conname, con.contype::text,
           ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
                 ORDER BY k.ord)::text[],
           con.conparentid <> 0 AS inherited
    FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE con.contype IN ('p', 'u', 'f', 'c', 'x') AND {system}
""".replace("{system}", _SYSTEM)
_CATALOG_INDEXES: Final = """
    SELECT n.nspname, t.relname, ic.relname, i.indisunique,
           ARRAY(SELECT coalesce(a.attname, '') FROM unnest(i.indkey::int2[]) WITH ORDINALITY
                 k(num, ord) LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid
                 AND a.attnum = k.num ORDER BY k.ord)::text[],
           i.indexprs IS NOT NULL,
           EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = ic.oid)
    FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE {system}
      AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid
                      AND con.contype IN ('p', 'u', 'x'))
""".replace("{system}", _SYSTEM)


def lint_catalog(
    conn: psycopg.Connection[Any],
    *,
    classification: Classification | None = None,
    require_classified: bool = True,
    schemas: Sequence[str] = ("public",),
) -> LintReport:
    """Lint the live catalog of ``conn``'s database (tables in ``schemas``)."""
    checker = _Checker(catalog=True)
    wanted = set(schemas)
    tables: dict[str, _Table] = {}
    table: _Table | None
    for nsp, rel, is_partition, parent in conn.execute(_CATALOG_TABLES.encode()).fetchall():
        if nsp not in wanted or _is_bookkeeping(rel):
            continue
        tables[rel] = _Table(name=rel, location=rel, parent=parent if is_partition else None)
        checker.table_name(rel, tables[rel].parent, rel)
    for nsp, rel, col, ctype, identity, owns_seq in conn.execute(
        _CATALOG_COLUMNS.encode()
    ).fetchall():
        table = tables.get(rel) if nsp in wanted else None
        if table is None:
            continue
        table.columns[col] = _Column(col, ctype, f"{rel}.{col}")
        if table.parent is not None:
            continue
        checker.name(col, "column", f"{rel}.{col}")
        shown = {"integer": "serial", "bigint": "bigserial", "smallint": "smallserial"}.get(ctype)
        checker.column_type(
            rel, col, shown if owns_seq and not identity and shown else ctype, f"{rel}.{col}"
        )
    for nsp, rel, name, contype, cols, inherited in conn.execute(
        _CATALOG_CONSTRAINTS.encode()
    ).fetchall():
        table = tables.get(rel) if nsp in wanted else None
        if table is None:
            continue
        if contype == "p":
            table.primary_key = tuple(cols)
        if table.parent is not None or inherited:
            continue
        kind = {"p": "primary", "u": "unique", "f": "foreign", "c": "check", "x": "exclude"}[
            contype
        ]
        checker.constraint(
            kind,  # type: ignore[arg-type]
            name,
            rel,
            tuple(cols) if kind in ("unique", "foreign") and cols else None,
            f"{rel} ({name})",
        )
    for nsp, rel, name, unique, cols, has_expr, attached in conn.execute(
        _CATALOG_INDEXES.encode()
    ).fetchall():
        table = tables.get(rel) if nsp in wanted else None
        if table is None or table.parent is not None or attached:
            continue
        plain = None if has_expr or "" in cols else tuple(cols)
        checker.constraint("unique" if unique else "index", name, rel, plain, f"{rel} ({name})")
    for table in tables.values():
        checker.primary_key(table)
    violations = list(checker.violations)
    checked = [f"catalog: schema(s) {', '.join(schemas)}"]
    if classification is not None:
        checked.append(f"classification: {classification.origin or 'given'}")
        shapes = {
            t.name: {c.name: c.type for c in t.columns.values()}
            for t in tables.values()
            if t.parent is None
        }
        violations.extend(
            lint_classification(classification, shapes, require_all=require_classified)
        )
    return LintReport(violations, checked)
