"""Reading where a component stands and what was done: no lock taken, nothing written."""

from __future__ import annotations

from typing import Any

from aiaas_db.migrations._changesets import ChangeSet
from aiaas_db.migrations._checks import read_view
from aiaas_db.migrations._context import Settings
from aiaas_db.migrations._models import AppliedChangeSet, MigrationStatus, PendingChangeSet

__all__: list[str] = []


def read_status(
    settings: Settings, sets: tuple[ChangeSet, ...], *, history_limit: int
) -> MigrationStatus:
    """The component's state against ``sets`` (see :meth:`Migrator.status`)."""
    tables = settings.tables
    by_version = {cs.version: cs for cs in sets}
    with settings.connect("status") as conn:
        initialized = tables.ours_exist(conn)
        view = read_view(tables, conn, sets)
        history = (
            tuple(tables.read_history(conn, limit=history_limit))
            if initialized and history_limit > 0
            else ()
        )
        last = tables.last_migration_at(conn) if initialized else None
    head = view.head
    pending = tuple(
        PendingChangeSet(
            version=cs.version,
            slug=cs.slug,
            no_transaction=cs.up.no_transaction,
            destructive=cs.up.destructive,
            author=cs.author,
            out_of_order=head is not None and cs.version < head,
        )
        for cs in sets
        if cs.version not in view.applied
    )
    applied = tuple(
        AppliedChangeSet(
            version=v,
            slug=e.slug or (by_version[v].slug if v in by_version else ""),
            checksum=e.checksum,
            applied_at=e.applied_at,
            applied_by=e.applied_by,
            approved_by=e.approved_by,
            checksum_matches=(
                None
                if v not in by_version or not e.checksum
                else e.checksum == by_version[v].checksum
            ),
        )
        for v, e in sorted(view.applied.items())
    )
    dirty = view.dirty
    detail = None
    if dirty is not None:
        detail = (
            "schema_migrations marked dirty outside aiaas-db"
            if dirty.external
            else f"no-transaction {dirty.direction} interrupted"
            + (f": {dirty.error}" if dirty.error else "")
        )
    golang = view.golang or (None, False)
    return MigrationStatus(
        component=settings.component,
        initialized=initialized,
        current_version=head,
        dirty=dirty is not None,
        dirty_version=None if dirty is None else dirty.version,
        dirty_detail=detail,
        failed_version=None if view.failed is None else view.failed.version,
        failed_error=None if view.failed is None else view.failed.error,
        applied=applied,
        pending=pending,
        history=history,
        last_migration_at=last,
        checksum_mismatches=tuple(a.version for a in applied if a.checksum_matches is False),
        missing=tuple(v for v in sorted(view.applied) if sets and v not in by_version),
        out_of_order=tuple(p.version for p in pending if p.out_of_order),
        golang_version=golang[0],
        golang_dirty=golang[1],
        source=settings.source_origin,
    )


def read_history(settings: Settings, *, limit: int | None, run_id: str | None) -> list[Any]:
    """Recorded operations, newest first (see :meth:`Migrator.history`)."""
    with settings.connect("history") as conn:
        if not settings.tables.ours_exist(conn):
            return []
        return list(settings.tables.read_history(conn, limit=limit, run_id=run_id))
