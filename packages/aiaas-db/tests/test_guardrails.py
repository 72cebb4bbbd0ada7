"""Tamper evidence, out-of-order, missing files, dual approval, destructive sets."""

from __future__ import annotations

import psycopg
import pytest
from conftest import V1, V2, V3, SetWriter
from test_migrate import basic, golang_row, ledger, tables

from aiaas_db import (
    ApprovalRequiredError,
    ChecksumMismatchError,
    MigrationNotFoundError,
    MigrationRefusedError,
    Migrator,
    MissingChangeSetError,
    OutOfOrderError,
)


def test_edited_applied_set_is_refused_until_accepted(db_url: str, sets: SetWriter) -> None:
    basic(sets)
    m = Migrator(db_url, sets.root)
    m.up(to=V1)
    path = sets.root / f"{V1}_users.up.sql"
    original = path.read_text()
    # A cosmetic line-ending change is not tampering.
    path.write_bytes(original.replace("\n", "\r\n").encode())
    assert m.up().versions == (V2,)
    path.write_text(original + "-- tweak\n")
    with pytest.raises(ChecksumMismatchError) as info:
        m.up()
    assert info.value.versions == (V1,)
    assert "accept-checksum" in info.value.message
    assert m.status().checksum_mismatches == (V1,)
    with pytest.raises(ChecksumMismatchError):
        m.down()
    with pytest.raises(MigrationRefusedError, match="needs a reason"):
        m.accept_checksum([V1], reason=" ")
    with pytest.raises(MigrationRefusedError, match="name the version"):
        m.accept_checksum([], reason="x")
    with pytest.raises(MigrationNotFoundError):
        m.accept_checksum([V3], reason="x")
    with pytest.raises(MigrationRefusedError) as same:
        m.accept_checksum([V2], reason="x")
    assert same.value.code == "MIGRATION_CHECKSUM_MATCHES"
    report = m.accept_checksum([V1], reason="comment added after review")
    assert report.operation == "accept_checksum"
    assert m.status().checksum_mismatches == ()
    entry = m.history(limit=1)[0]
    assert entry.direction == "accept_checksum"
    assert "comment added" in (entry.reason or "")
    assert m.up().status == "noop"


def test_out_of_order_is_refused_unless_allowed(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "a", "CREATE TABLE a (x int);", "DROP TABLE a;")
    sets.add(V3, "c", "CREATE TABLE c (x int);", "DROP TABLE c;")
    m = Migrator(db_url, sets.root)
    m.up()
    sets.add(V2, "b", "CREATE TABLE b (x int);", "DROP TABLE b;")
    status = m.status()
    assert status.out_of_order == (V2,)
    assert status.pending[0].out_of_order
    with pytest.raises(OutOfOrderError) as info:
        m.up()
    assert info.value.versions == (V2,)
    assert "b" not in tables(db_url)
    report = m.up(allow_out_of_order=True)
    assert report.versions == (V2,)
    assert any(c.name == "order" and "allowed" in c.detail for c in report.checks)
    assert golang_row(db_url) == [(V3, False)]  # the head stays the newest version
    assert ledger(db_url) == {V1: "applied", V2: "applied", V3: "applied"}
    assert m.down(to=V1).versions == (V3, V2)


def test_applied_version_missing_from_source(db_url: str, sets: SetWriter) -> None:
    basic(sets)
    m = Migrator(db_url, sets.root)
    m.up()
    sets.remove(V1, "users")
    with pytest.raises(MissingChangeSetError) as info:
        m.up()
    assert info.value.versions == (V1,)
    assert m.status().missing == (V1,)


def test_production_needs_an_approver_before_anything_runs(sets: SetWriter) -> None:
    basic(sets)
    # An unreachable database proves the refusal comes before connecting.
    m = Migrator("postgresql://x@127.0.0.1:1/none", sets.root, environment="production")
    with pytest.raises(ApprovalRequiredError) as info:
        m.up()
    assert info.value.code == "MIGRATION_APPROVAL_REQUIRED"
    assert info.value.status == 403
    with pytest.raises(ApprovalRequiredError):
        m.down()
    with pytest.raises(ApprovalRequiredError):
        m.recover("mark-applied", reason="x")
    with pytest.raises(ApprovalRequiredError):
        m.force(V1, reason="x")
    with pytest.raises(MigrationRefusedError, match="refused in production") as drill:
        m.drill()
    assert drill.value.code == "MIGRATION_DRILL_REFUSED"


def test_production_author_cannot_approve_own_set(db_url: str, sets: SetWriter) -> None:
    basic(sets)  # V1 authored by alice; V2 has no author header: its author is the runner
    m = Migrator(db_url, sets.root, environment="production", actor="bob")
    with pytest.raises(ApprovalRequiredError, match="Alice is the author of 202401010000_users"):
        m.up(approved_by="Alice")
    with pytest.raises(ApprovalRequiredError, match="bob is the author of 202401020000_orgs"):
        m.up(approved_by="bob")
    assert tables(db_url) == set()
    assert golang_row(db_url) == []
    report = m.up(approved_by="carol")
    assert report.approved_by == "carol"
    assert report.environment == "production"
    assert any(c.name == "approval" and c.ok for c in report.checks)
    entry = m.history(limit=1)[0]
    assert (entry.applied_by, entry.approved_by, entry.environment) == (
        "bob",
        "carol",
        "production",
    )
    with psycopg.connect(db_url) as conn:
        approvers = conn.execute(
            "SELECT DISTINCT approved_by FROM aiaas_migration_ledger"
        ).fetchall()
    assert approvers == [("carol",)]
    with pytest.raises(ApprovalRequiredError, match="bob is the author of force"):
        m.force(V1, reason="x", approved_by="bob")
    # Staging needs no approval.
    assert Migrator(db_url, sets.root, environment="staging").down().versions == (V2,)


def test_destructive_sets_need_explicit_confirmation(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "t", "CREATE TABLE t (a int);", "-- aiaas:destructive\nDROP TABLE t;")
    sets.add(V2, "drop", "-- aiaas:destructive\nDROP TABLE t;", "CREATE TABLE t (a int);")
    m = Migrator(db_url, sets.root)
    m.up(to=V1)
    with pytest.raises(MigrationRefusedError) as info:
        m.up()
    assert info.value.code == "MIGRATION_DESTRUCTIVE_UNCONFIRMED"
    assert info.value.versions == (V2,)
    assert m.up(dry_run=True).results[0].status == "dry_run"  # a dry run destroys nothing
    assert m.up(allow_destructive=True).versions == (V2,)
    assert m.down().versions == (V2,)  # its down is not destructive
    with pytest.raises(MigrationRefusedError):
        m.down()
    assert m.down(allow_destructive=True).versions == (V1,)
