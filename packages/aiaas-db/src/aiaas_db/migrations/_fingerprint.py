"""A fingerprint of a database's catalog, to prove a down script undoes its up.

It covers schemas, extensions, tables (kind, persistence, partition key and bounds), columns
(type, nullability, default, identity, generation, collation), constraints, indexes, triggers,
functions and procedures, views and materialized views, sequences, types (enums, domains,
composites) and row-level security policies -- everything ``pg_dump --schema-only`` would
recreate, by name and definition rather than by OID, so an object dropped and recreated identically
has the same fingerprint. Column order is left out: a column dropped and added back comes back
last, and nothing a migration does can make that reliably otherwise.

``exclude`` names tables left out (the migration state tables themselves).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    import psycopg

__all__ = ["CatalogFingerprint", "catalog_fingerprint"]

_SYSTEM: Final = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    " AND n.nspname NOT LIKE 'pg_temp_%' AND n.nspname NOT LIKE 'pg_toast_temp_%'"
)

_TEMPLATES: Final[dict[str, str]] = {
    "schemas": """
        SELECT n.nspname FROM pg_namespace n WHERE {system}
    """,
    "extensions": """
        SELECT e.extname || ' ' || n.nspname FROM pg_extension e
        JOIN pg_namespace n ON n.oid = e.extnamespace
    """,
    "tables": """
        SELECT n.nspname || '.' || c.relname || ' kind=' || c.relkind::text
               || ' persistence=' || c.relpersistence::text
               || coalesce(' partition_key=' || pg_get_partkeydef(c.oid), '')
               || CASE WHEN c.relrowsecurity THEN ' rls' ELSE '' END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'f') AND {system}
    """,
    "columns": """
        SELECT n.nspname || '.' || c.relname || '.' || a.attname || ' '
               || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
               || CASE a.attidentity WHEN '' THEN '' ELSE ' identity ' || a.attidentity::text END
               || CASE a.attgenerated WHEN '' THEN '' ELSE ' generated ' || a.attgenerated::text END
               || coalesce(' collate ' || nullif(co.collname, 'default'), '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
             AND a.attcollation <> (SELECT typcollation FROM pg_type WHERE oid = a.atttypid)
        WHERE a.attnum > 0 AND NOT a.attisdropped
          AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'c') AND {system}
          AND NOT (c.relkind = 'c' AND EXISTS (
              SELECT 1 FROM pg_type t WHERE t.typrelid = c.oid AND t.typtype <> 'c'))
    """,
    "constraints": """
        SELECT n.nspname || '.' || coalesce(c.relname, t.typname) || ' ' || con.conname || ' '
               || pg_get_constraintdef(con.oid)
        FROM pg_constraint con
        JOIN pg_namespace n ON n.oid = con.connamespace
        LEFT JOIN pg_class c ON c.oid = con.conrelid
        LEFT JOIN pg_type t ON t.oid = con.contypid
        WHERE {system}
          -- NOT NULL: pg_constraint rows since PostgreSQL 17 (domains) and 18 (columns), which
          -- the columns' and types' own not-null flags already cover on every version
          AND con.contype <> 'n'
    """,
    "indexes": """
        SELECT pg_get_indexdef(i.indexrelid)
               || CASE WHEN i.indisvalid THEN '' ELSE ' (INVALID)' END
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {system}
    """,
    "triggers": """
        SELECT pg_get_triggerdef(tg.oid)
               || CASE tg.tgenabled WHEN 'D' THEN ' (disabled)' ELSE '' END
        FROM pg_trigger tg
        JOIN pg_class c ON c.oid = tg.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT tg.tgisinternal AND {system}
    """,
    "functions": """
        SELECT CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid)
                    ELSE n.nspname || '.' || p.proname || '('
                         || pg_get_function_identity_arguments(p.oid)
                         || ') kind=' || p.prokind::text
               END
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {system}
          AND NOT EXISTS (SELECT 1 FROM pg_depend dep
                          WHERE dep.objid = p.oid AND dep.deptype = 'e')
    """,
    "views": """
        SELECT n.nspname || '.' || c.relname || ' kind=' || c.relkind::text || ' '
               || pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {system}
    """,
    "sequences": """
        SELECT n.nspname || '.' || c.relname || ' ' || format_type(s.seqtypid, NULL)
               || ' start ' || s.seqstart || ' increment ' || s.seqincrement
               || ' min ' || s.seqmin || ' max ' || s.seqmax || ' cache ' || s.seqcache
               || CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END
               || coalesce(' owned by ' || oc.relname || '.' || oa.attname, '')
        FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        LEFT JOIN pg_class oc ON oc.oid = d.refobjid
        LEFT JOIN pg_attribute oa ON oa.attrelid = d.refobjid AND oa.attnum = d.refobjsubid
        WHERE {system}
    """,
    "types": """
        SELECT n.nspname || '.' || t.typname || ' ' || t.typtype::text ||
               CASE t.typtype
                 WHEN 'e' THEN ' (' || (SELECT string_agg(quote_literal(e.enumlabel), ', '
                                                        ORDER BY e.enumsortorder)
                                        FROM pg_enum e WHERE e.enumtypid = t.oid) || ')'
                 WHEN 'd' THEN ' ' || format_type(t.typbasetype, t.typtypmod)
                               || CASE WHEN t.typnotnull THEN ' not null' ELSE '' END
                               || coalesce(' default ' || t.typdefault, '')
                 ELSE ''
               END
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd', 'c', 'r') AND {system}
          AND (t.typtype <> 'c'
               OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.objid = t.oid AND dep.deptype = 'e')
    """,
    "partitions": """
        SELECT pn.nspname || '.' || parent.relname || ' <- ' || n.nspname || '.' || c.relname
               || ' ' || coalesce(pg_get_expr(c.relpartbound, c.oid), '(inherits)')
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class parent ON parent.oid = i.inhparent
        JOIN pg_namespace pn ON pn.oid = parent.relnamespace
        WHERE {system}
    """,
    "policies": """
        SELECT n.nspname || '.' || c.relname || ' ' || pol.polname || ' ' || pol.polcmd::text
               || CASE WHEN pol.polpermissive THEN ' permissive' ELSE ' restrictive' END
               || coalesce(' using ' || pg_get_expr(pol.polqual, pol.polrelid), '')
               || coalesce(' check ' || pg_get_expr(pol.polwithcheck, pol.polrelid), '')
        FROM pg_policy pol
        JOIN pg_class c ON c.oid = pol.polrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {system}
    """,
}

# Every query leaves out the system schemas the same way.
_QUERIES: Final = {k: v.replace("{system}", _SYSTEM) for k, v in _TEMPLATES.items()}
CATEGORIES: Final = tuple(_QUERIES)


@attrs.frozen
class CatalogFingerprint:
    """The catalog as sorted text items per category, and a digest over all of them."""

    items: Mapping[str, tuple[str, ...]]

    @property
    def digest(self) -> str:
        canonical = json.dumps({k: list(v) for k, v in sorted(self.items.items())})
        return hashlib.sha256(canonical.encode()).hexdigest()

    def diff(self, other: CatalogFingerprint) -> list[str]:
        """What ``other`` has that this lacks (``+``) and the other way round (``-``)."""
        lines: list[str] = []
        for category in sorted(set(self.items) | set(other.items)):
            mine = set(self.items.get(category, ()))
            theirs = set(other.items.get(category, ()))
            lines.extend(f"- {category}: {item}" for item in sorted(mine - theirs))
            lines.extend(f"+ {category}: {item}" for item in sorted(theirs - mine))
        return lines

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CatalogFingerprint):
            return NotImplemented
        return self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)


def _excluded(item: str, exclude: Iterable[str]) -> bool:
    head = item.split(" ", 1)[0]
    return any(
        head == name
        or head.startswith(f"{name}.")
        or f" ON {name} " in item
        or f" ON ONLY {name} " in item
        or (head.startswith(f"{name}_") and head.endswith("_seq"))
        for name in exclude
    )


def catalog_fingerprint(
    conn: psycopg.Connection[Any], *, exclude: Iterable[str] = ()
) -> CatalogFingerprint:
    """Fingerprint the catalog of the database ``conn`` is connected to.

    ``exclude`` holds qualified table names (``schema.table``) whose objects are left out.
    """
    excluded = tuple(exclude)
    items: dict[str, tuple[str, ...]] = {}
    for category, query in _QUERIES.items():
        rows = conn.execute(query.encode()).fetchall()
        values = [str(r[0]) for r in rows if r[0] is not None]
        if excluded:
            values = [v for v in values if not _excluded(v, excluded)]
        items[category] = tuple(sorted(set(values)))
    return CatalogFingerprint(items=items)
