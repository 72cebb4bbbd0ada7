"""``aiaas-db docs``: the committed docs are current; drift and edits are detected."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aiaas_db import LocalPostgres
from aiaas_db.cli._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from aiaas_db.cli._main import main
from aiaas_db.quality._docs import DOC_FILES, apply_platform, default_docs_dir, generate_docs

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def platform_db(pg: LocalPostgres) -> Iterator[str]:
    """One database with the platform's change sets applied, shared by this module."""
    name = f"docs_{uuid.uuid4().hex[:12]}"
    url = pg.create_database(name)
    apply_platform(url)
    yield url
    pg.drop_database(name)


def test_docs_current(platform_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The committed docs match the change sets; on failure run `aiaas-db docs` and commit."""
    code = main(["docs", "--check", "--dsn", platform_db, "--out", str(DOCS_DIR)])
    out = capsys.readouterr()
    assert code == EXIT_OK, (
        "packages/aiaas-db/docs is out of date: run `aiaas-db docs` from the repository root "
        "and commit the result\n" + out.out
    )
    assert "current" in out.out


def test_an_edited_doc_is_detected(
    platform_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "docs"
    shutil.copytree(DOCS_DIR, out_dir)
    dictionary = out_dir / "data-dictionary.md"
    text = dictionary.read_text()
    assert "| `email_digest` | text | not null |" in text
    dictionary.write_text(
        text.replace("| `email_digest` | text | not null |", "| `email_digest` | text | null |")
    )
    (out_dir / "erd.md").unlink()
    code = main(["docs", "--check", "--dsn", platform_db, "--out", str(out_dir)])
    captured = capsys.readouterr()
    assert code == EXIT_FAILED
    assert f"--- {dictionary} (committed)" in captured.out
    assert "-| `email_digest` | text | null |" in captured.out
    assert "+| `email_digest` | text | not null |" in captured.out
    assert f"--- {out_dir / 'erd.md'} (missing)" in captured.out
    assert "2 file(s)" in captured.err
    # JSON: the same verdict in one document.
    assert (
        main(["docs", "--check", "--dsn", platform_db, "--out", str(out_dir), "-o", "json"])
        == EXIT_FAILED
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert "email_digest" in doc["diff"]


def test_generation_is_deterministic_and_ignores_dated_partitions(platform_db: str) -> None:
    first = generate_docs(platform_db)
    assert generate_docs(platform_db) == first
    # Daily partitions are run-time objects: a live database documents like a fresh one.
    with psycopg.connect(platform_db, autocommit=True) as conn:
        for day in ("20261126", "20261127"):
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS usage_events_p{day} PARTITION OF usage_events "
                f"FOR VALUES FROM ('{day}') TO ('{int(day) + 1}')".encode()
            )
    second = generate_docs(platform_db)
    assert dict(first.files) == dict(second.files)
    assert "made by the change sets: `usage_events_default` (" in second.files["data-dictionary.md"]
    assert "usage_events_p2026" not in second.files["data-dictionary.md"]


def test_content_of_the_generated_docs(platform_db: str) -> None:
    docs = generate_docs(platform_db)
    assert set(docs.files) == set(DOC_FILES)
    dictionary = docs.files["data-dictionary.md"]
    assert "## users" in dictionary
    assert "## usage_events" in dictionary
    assert "aiaas_migration_ledger" not in dictionary
    assert "schema_migrations" not in dictionary
    assert (
        "| `email_ciphertext` | bytea | null | — | restricted | aes-gcm | 30 days |" in dictionary
    )
    assert "30 days from `deletion_requested_at`" in dictionary
    erd = docs.files["erd.md"]
    assert erd.count("```mermaid") == 1
    assert "erDiagram" in erd
    assert 'organizations ||--o{ users : "fk_users_organization_id"' in erd
    assert 'users |o--o{ api_keys : "fk_api_keys_created_by_user_id"' in erd
    assert 'text email_digest UK "restricted, hmac"' in erd
    changelog = docs.files["changelog.md"]
    assert "## operational" in changelog
    assert "## analytics" in changelog
    assert changelog.index("## operational") < changelog.index("## analytics")
    assert "destructive (down)" in changelog
    for text in docs.files.values():
        assert text.endswith("\n")
        assert "\r" not in text


def test_cli_writes_from_a_throwaway_database(
    tmp_path: Path,
    pg: LocalPostgres,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --dsn the sets are applied to a fresh database of a throwaway cluster (the
    session's cluster stands in for a new one: starting clusters is tested in test_local)."""
    started: list[bool] = []

    def temporary(**_kwargs: object) -> contextlib.AbstractContextManager[LocalPostgres]:
        started.append(True)
        return contextlib.nullcontext(pg)

    monkeypatch.setattr(LocalPostgres, "temporary", staticmethod(temporary))
    out_dir = tmp_path / "out"
    assert main(["docs", "--out", str(out_dir), "-o", "json"]) == EXIT_OK
    assert started == [True]
    doc = json.loads(capsys.readouterr().out)
    assert doc["written"] == [str(out_dir / n) for n in DOC_FILES]
    for name in DOC_FILES:
        assert (out_dir / name).read_text() == (DOCS_DIR / name).read_text()
    assert main(["docs", "--check", "--out", str(out_dir)]) == EXIT_OK


def test_default_folder_is_found_from_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_docs_dir(DOCS_DIR.parent / "src") == DOCS_DIR
    assert default_docs_dir(DOCS_DIR.parents[2]) == DOCS_DIR
    # A folder beside the checkout, not inside it (nox may put TMPDIR inside the checkout).
    outside = Path(tempfile.mkdtemp(dir=DOCS_DIR.parents[3]))
    try:
        assert default_docs_dir(outside) is None
        monkeypatch.chdir(outside)
        assert main(["docs", "--check"]) == EXIT_USAGE
    finally:
        shutil.rmtree(outside, ignore_errors=True)
