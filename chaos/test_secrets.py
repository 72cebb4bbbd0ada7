"""Campaign "secrets": planted values never appear in a log line, state file or error body.

``chaos_secrets`` plants values through the whole run: the Linode token the emulator accepts,
the database password of the migrations' role, aiaas-db's PII keys, PII values stored as data,
API keys. Every campaign scans what it produced (subprocess output, state files, server logs,
emulator request logs) and the framework scans every chaos test's captured output. This module
runs last (see ``conftest.py``): it adds its own attacks -- commands that fail *because of* a
secret (a refused token, an unreachable or malformed DSN holding the password, an invalid PII
key, a change set whose failure names PII values) and whose error paths therefore hold the value
in hand -- scans their output, and judges every scan of the run.

Figures: values planted, places scanned, hits (0).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import ChaosReport, PlantedSecrets

from aiaas_db import LocalPostgres
from aiaas_infra import example_spec_path
from aiaas_infra.testing import LinodeEmulator

CAMPAIGN = "secrets"
CLI_TIMEOUT_S = 120.0


def _cli(name: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.is_file() else [sys.executable, "-m", name.replace("-", "_")]


def _run(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cli(name), *args],
        env={**os.environ, "NO_COLOR": "1", **env},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def attacks(tmp_path: Path, chaos_secrets: PlantedSecrets) -> list[tuple[str, str]]:
    """(what, output) of commands that fail holding a planted value."""
    s = chaos_secrets
    done: list[tuple[str, str]] = []

    def record(what: str, proc: subprocess.CompletedProcess[str], *, expect_fail: bool) -> None:
        assert (proc.returncode != 0) == expect_fail, f"{what}: exit {proc.returncode}"
        done.append((what, proc.stdout + proc.stderr))

    port = _closed_port()
    source = tmp_path / "sets"
    source.mkdir()
    (source / "202501010000_people.up.sql").write_text(
        "CREATE TABLE people (email text, name text, phone text);\n"
    )
    (source / "202501010000_people.down.sql").write_text("DROP TABLE people;\n")
    dsn = f"postgresql://chaos:{s.db_password}@127.0.0.1:{port}/chaos"
    for args, env in (
        (["migrate", "status"], {"AIAAS_DB_URL": dsn}),
        (["migrate", "up", "--dsn", dsn, "--output", "json"], {}),
        (["migrate", "up", "--dsn", dsn.replace(f":{port}/", ":notaport/")], {}),
        (["migrate", "up", "--dsn", f"host=127.0.0.1 port={port} password={s.db_password}"], {}),
    ):
        proc = _run(
            "aiaas-db",
            *args,
            "--source",
            str(source),
            env={**env, "AIAAS_DB_LOCAL_DIR": str(tmp_path / "local")},
        )
        record(f"aiaas-db {' '.join(args[:2])} with an unusable DSN", proc, expect_fail=True)
    # Invalid PII keys (the planted API key is no key): refused before anything starts.
    proc = _run(
        "aiaas-db",
        "migrate",
        "up",
        "--platform",
        env={
            "AIAAS_DB_PII_HASH_KEY": s.pii_hash_key,
            "AIAAS_DB_PII_ENCRYPTION_KEY": s.api_key,
            "AIAAS_DB_LOCAL_DIR": str(tmp_path / "local"),
            "AIAAS_DB_URL": "",
        },
    )
    record("aiaas-db migrate up with an invalid PII key", proc, expect_fail=True)
    assert not (tmp_path / "local").exists(), "a refused command started a local cluster"

    # PII as a table's rows, then change sets that fail on those rows: a data exception
    # (PostgreSQL quotes the value in its message), a unique index over duplicates (the value in
    # its DETAIL), a check constraint the rows break.
    failing = {
        202501020000: "ALTER TABLE people ALTER COLUMN phone TYPE bigint USING phone::bigint;",
        202501030000: "ALTER TABLE people ADD CONSTRAINT people_email_unique UNIQUE (email);",
        202501040000: "ALTER TABLE people ADD CONSTRAINT people_name_short "
        "CHECK (length(name) < 5);",
    }
    with LocalPostgres.temporary() as pg:
        url = pg.create_database("secrets")
        done_up = _run(
            "aiaas-db", "migrate", "up", "--source", str(source), env={"AIAAS_DB_URL": url}
        )
        record("aiaas-db migrate up (the people table)", done_up, expect_fail=False)
        with psycopg.connect(url, autocommit=True) as conn:
            row = (s.pii_email, s.pii_name, s.pii_phone)
            conn.execute("INSERT INTO people VALUES (%s, %s, %s), (%s, %s, %s)", row + row)
        for version, up in failing.items():
            (source / f"{version}_fails.up.sql").write_text(up + "\n")
            (source / f"{version}_fails.down.sql").write_text("SELECT 1;\n")
            for output in ("text", "json"):
                proc = _run(
                    "aiaas-db",
                    "migrate",
                    "up",
                    "--source",
                    str(source),
                    "--output",
                    output,
                    env={"AIAAS_DB_URL": url, **s.pii_env()},
                )
                record(
                    f"aiaas-db migrate up failing on PII rows ({version}, {output})",
                    proc,
                    expect_fail=True,
                )
                if output == "json":  # the failure as the history keeps it
                    status = _run(
                        "aiaas-db",
                        "migrate",
                        "status",
                        "--source",
                        str(source),
                        "--output",
                        output,
                        env={"AIAAS_DB_URL": url},
                    )
                    record("aiaas-db migrate status after it", status, expect_fail=False)
                recover = _run(
                    "aiaas-db",
                    "migrate",
                    "recover",
                    "--action",
                    "mark-rolled-back",
                    "--reason",
                    "chaos",
                    "--yes",
                    "--source",
                    str(source),
                    env={"AIAAS_DB_URL": url},
                )
                record("aiaas-db migrate recover", recover, expect_fail=False)
            (source / f"{version}_fails.up.sql").unlink()
            (source / f"{version}_fails.down.sql").unlink()

    # The Linode token refused by the API, and an API that is not there.
    spec = str(example_spec_path())
    with LinodeEmulator(token="another-token") as em:
        for command in ("plan", "apply"):
            proc = _run(
                "aiaas-infra",
                command,
                "--spec",
                spec,
                "--state",
                str(tmp_path / "state"),
                *(["--yes"] if command == "apply" else []),
                env={**em.env(), "LINODE_TOKEN": s.linode_token},
            )
            record(f"aiaas-infra {command} with a refused token", proc, expect_fail=True)
    proc = _run(
        "aiaas-infra",
        "plan",
        "--spec",
        spec,
        "--state",
        str(tmp_path / "state"),
        env={
            "LINODE_TOKEN": s.linode_token,
            "LINODE_API_URL": f"http://127.0.0.1:{port}/v4",
            "AIAAS_INFRA_REQUEST_TIMEOUT": "2",
        },
    )
    record("aiaas-infra plan against an unreachable API", proc, expect_fail=True)
    return done


def test_no_planted_secret_appears_anywhere(
    attacks: list[tuple[str, str]],
    tmp_path: Path,
    chaos_secrets: PlantedSecrets,
    chaos_report: ChaosReport,
    chaos_seed: int,
) -> None:
    own = []
    for what, output in attacks:
        own += chaos_secrets.scan([output], where=what)
    own += chaos_secrets.scan([tmp_path / "state"], where="aiaas-infra state after refusals")
    everything = list(chaos_secrets.hits)  # every campaign's scans, this module's included
    report = chaos_report.figure
    report(CAMPAIGN, "values planted", len(chaos_secrets.values))
    report(CAMPAIGN, "own attacks (commands run with a secret in hand)", len(attacks))
    report(CAMPAIGN, "places scanned", chaos_secrets.places_scanned)
    report(CAMPAIGN, "hits", len(everything), bound="0")
    assert own == [], f"seed {chaos_seed}: planted values in error output: {[str(h) for h in own]}"
    assert everything == [], (
        f"seed {chaos_seed}: planted values found: {[str(h) for h in everything]}"
    )
