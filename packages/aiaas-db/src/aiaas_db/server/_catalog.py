"""The entities of the live catalog, with each field's class and retention."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import psycopg

    from aiaas_db.platform._classification import Classification, ClassifiedEntity, ClassifiedField

__all__: list[str] = []

# Tables that belong to the tooling, not the data model.
_TOOLING_PREFIXES: Final = ("schema_migrations", "aiaas_")
# Derived tables whose rows are computed from another table (no foreign key can say so).
_DERIVED_FROM: Final[dict[str, str]] = {
    "analytics_hourly_rollups": "usage_events",
    "analytics_daily_rollups": "usage_events",
}


# -- classification ----------------------------------------------------------------------------


def _entity_key(name: str) -> str:
    return name.replace("_", "").lower()


def _loose_field(entity: ClassifiedEntity, column: str) -> ClassifiedField | None:
    """A contract-format entry (no ``column:``) for ``column``: the same name, or a unique
    ``email`` -> ``email_digest`` / ``event_id`` -> ``usage_event_id`` match."""
    loose = [
        f for f in entity.fields if column.startswith(f"{f.name}_") or column.endswith(f"_{f.name}")
    ]
    return loose[0] if len(loose) == 1 else None


def _classify(
    classification: Classification | None, table: str, entity: str, column: str
) -> ClassifiedField | None:
    if classification is None:
        return None
    found = classification.for_table(table)
    if found is None:
        found = next(
            (e for e in classification.entities if _entity_key(e.name) == _entity_key(entity)),
            None,
        )
    if found is None:
        return None
    exact = found.field(column)
    if exact is not None or found.table is not None:
        return exact  # our own map names every column exactly
    return _loose_field(found, column)


# -- the live catalog --------------------------------------------------------------------------


def _singular(table: str) -> str:
    for plural, single in (("ies", "y"), ("sses", "ss"), ("xes", "x"), ("s", "")):
        if table.endswith(plural) and len(table) > len(plural):
            return table[: -len(plural)] + single
    return table


def entity_name(table: str) -> str:
    """``model_registry_entries`` -> ``ModelRegistryEntry``."""
    return "".join(part.capitalize() for part in _singular(table).split("_") if part)


def _read_entities(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    include_fields: bool,
    classification: Classification | None,
) -> list[dict[str, Any]]:
    tables = conn.execute(
        """
        SELECT c.oid, c.relname, obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        ORDER BY c.relname
        """,
        (schema,),
    ).fetchall()
    tables = [t for t in tables if not str(t[1]).startswith(_TOOLING_PREFIXES)]
    oids = [int(t[0]) for t in tables]
    names = {int(t[0]): str(t[1]) for t in tables}
    columns: dict[str, list[tuple[str, str, bool]]] = {name: [] for name in names.values()}
    for relid, column, type_name, nullable in conn.execute(
        """
        SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
        FROM pg_attribute a
        WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attrelid, a.attnum
        """,
        (oids,),
    ).fetchall():
        columns[names[int(relid)]].append((str(column), str(type_name), bool(nullable)))
    foreign = {
        (str(src), str(dst))
        for src, dst in conn.execute(
            """
            SELECT s.relname, t.relname
            FROM pg_constraint k
            JOIN pg_class s ON s.oid = k.conrelid
            JOIN pg_class t ON t.oid = k.confrelid
            WHERE k.contype = 'f' AND s.oid = ANY(%s) AND t.oid = ANY(%s)
            """,
            (oids, oids),
        ).fetchall()
    }
    # The convention (`<singular>_id` is a table's key) names references that carry no foreign
    # key on purpose (usage_events, rollups: ingest speed).
    key_of = {
        f"{_singular(table)}_id": table
        for table, cols in columns.items()
        if any(c[0] == f"{_singular(table)}_id" for c in cols)
    }
    refs = set(foreign)
    for table, cols in columns.items():
        for column, _type, _null in cols:
            target = key_of.get(column)
            if target is not None and target != table:
                refs.add((table, target))
    relationships: dict[str, list[dict[str, str]]] = {name: [] for name in columns}
    for src, dst in sorted(refs):
        if src == dst:
            continue
        relationships[src].append(
            {"type": "references", "target": entity_name(dst), "cardinality": "many-to-one"}
        )
        relationships[dst].append(
            {"type": "owns", "target": entity_name(src), "cardinality": "one-to-many"}
        )
    for table, source in _DERIVED_FROM.items():
        if table in columns and source in columns:
            relationships[table].append(
                {"type": "derivedFrom", "target": entity_name(source), "cardinality": "many-to-one"}
            )
    entities: list[dict[str, Any]] = []
    for oid, table, comment in tables:
        name = entity_name(str(table))
        entity: dict[str, Any] = {
            "name": name,
            "description": str(comment) if comment else f"Table {schema}.{table}",
            "relationships": relationships[str(table)],
        }
        if include_fields:
            fields: list[dict[str, Any]] = []
            for column, type_name, nullable in columns[names[int(oid)]]:
                field: dict[str, Any] = {"name": column, "type": type_name, "nullable": nullable}
                policy = _classify(classification, str(table), name, column)
                if policy is not None:
                    field["classification"] = policy.classification
                    field["retentionDays"] = policy.retention_days
                fields.append(field)
            entity["fields"] = fields
        entities.append(entity)
    return entities
