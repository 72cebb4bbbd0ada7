"""The lint rules: their ids, a violation, the schema model and the checks shared by the linters.

:class:`_Checker` holds the naming and type rules (L001-L009, L012) that the change-set linter
(:mod:`aiaas_db.quality._sqllint`) and the catalog linter (:func:`~aiaas_db.lint_catalog`) apply
to the tables they find; :func:`lint_classification` holds the classification rules (L013-L017).
The rules themselves are listed in :mod:`aiaas_db.quality._lint`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import attrs

from aiaas_db.platform._classification import RETENTION_POLICY, Classification

__all__ = [
    "BOOKKEEPING_TABLES",
    "RULES",
    "LintRule",
    "LintViolation",
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
