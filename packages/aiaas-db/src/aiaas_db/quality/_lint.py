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
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from aiaas_db._errors import ChangeSetError
from aiaas_db.migrations._changesets import (
    FILE_PATTERN,
    ChangeSetSource,
    DirectorySource,
    PackageSource,
    load_change_sets,
)
from aiaas_db.platform._classification import Classification
from aiaas_db.quality._rules import (
    LintViolation,
    _Checker,
    _Column,
    _is_bookkeeping,
    _Table,
    lint_classification,
)
from aiaas_db.quality._sqllint import _ChangeSetLinter, _File

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "LintReport",
    "lint_catalog",
    "lint_change_sets",
]


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
