"""``aiaas-db seed`` and ``aiaas-db purge``.

Exit codes (as for every aiaas-db command): 0 success, 1 unexpected error, 2 usage (unknown
package, malformed or out-of-range window, missing or invalid PII keys), 5 refused (schema not
applied, protected environment, invalid seed secret), 7 PostgreSQL unreachable.

Keys: the PII keys come from ``AIAAS_DB_PII_HASH_KEY`` / ``AIAAS_DB_PII_ENCRYPTION_KEY`` when
set, otherwise they are derived from the seed secret (local development only: never in
``production``). The API key digests of ``seed`` use ``AIAAS_DB_API_KEY_HASH_KEY`` when set,
otherwise :func:`~aiaas_db.seed_api_key_hash_key` of the seed secret.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from aiaas_db.cli._common import Output, dsn_option, output_option, resolve_dsn, run_command

if TYPE_CHECKING:
    from aiaas_core import KeyedHasher
    from aiaas_db.platform._pii import PiiProtector

__all__: list[str] = []

_PII_ENV = "AIAAS_DB_PII_HASH_KEY"


class _Window(click.ParamType):  # type: ignore[type-arg]
    """A ``7d`` / ``24h`` / ``2w`` duration checked by a library validator."""

    name = "duration"

    def __init__(self, check: Callable[[str], object]) -> None:
        self._check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            self._check(str(value))
        except Exception as exc:  # noqa: BLE001 -- every refusal is a usage error here
            self.fail(getattr(exc, "message", str(exc)), param, ctx)
        return str(value)


def _seed_window(text: str) -> object:
    from aiaas_db.platform._seeds import _check_window  # noqa: PLC0415 -- keeps --help fast

    return _check_window(text)


def _purge_window(text: str) -> object:
    from aiaas_db.platform._purge import _check_window  # noqa: PLC0415 -- keeps --help fast

    return _check_window(text)


def _env_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--env", "environment", envvar="AIAAS_ENV", help=help_text)


def _protector(environment: str | None, seed_secret: str) -> PiiProtector:
    from aiaas_db.platform._pii import PiiProtector  # noqa: PLC0415 -- keeps --help fast

    if os.environ.get(_PII_ENV, "").strip():
        return PiiProtector.from_env()
    if (environment or "").strip().lower() == "production":
        return PiiProtector.from_env()  # raises the ConfigError naming the variables
    return PiiProtector.for_local_development(seed_secret)


def _api_key_hasher(seed_secret: str) -> KeyedHasher:
    from aiaas_core import KeyedHasher  # noqa: PLC0415 -- keeps --help fast
    from aiaas_db.platform._seeds import API_KEY_HASH_KEY_ENV, seed_api_key_hasher  # noqa: PLC0415

    if os.environ.get(API_KEY_HASH_KEY_ENV, "").strip():
        return KeyedHasher.from_env(var=API_KEY_HASH_KEY_ENV)
    return seed_api_key_hasher(seed_secret)


@click.command("seed")
@click.option(
    "--package",
    "-p",
    type=click.Choice(["local-dev", "ci"]),
    default="local-dev",
    show_default=True,
    help="local-dev: a working local platform; ci: the same plus revoked/expired/rotating keys "
    "and users awaiting purge, with fewer events.",
)
@dsn_option
@click.option(
    "--window",
    type=_Window(_seed_window),
    default="7d",
    show_default=True,
    help="Usage events for this many whole UTC days before today (1d to 366d).",
)
@_env_option("Environment name (env AIAAS_ENV); seeding production is refused.")
@output_option
def seed_command(
    *, package: str, dsn: str | None, window: str, environment: str | None, output: str
) -> None:
    """Load deterministic seed data (idempotent: a rerun changes nothing).

    The seed secret is AIAAS_DB_SEED_SECRET (default: a published value per package, for
    throwaway databases only). It determines the local-dev API key, which only
    `--output json` prints (as "api_key").
    """
    out = Output(output)

    def action() -> None:
        from aiaas_db.platform._seeds import _check_environment, resolve_seed_secret, seed  # noqa: PLC0415

        _check_environment(environment)
        secret = resolve_seed_secret(package)
        # The keys first: a refusal must not start the local cluster (see _cli.resolve_dsn).
        protector = _protector(environment, secret)
        hasher = _api_key_hasher(secret)
        report = seed(
            resolve_dsn(dsn, out),
            package,
            window=window,
            protector=protector,
            seed_secret=secret,
            api_key_hasher=hasher,
            environment=environment,
            progress=not out.json,
        )
        if out.json:
            out.document({"ok": True, **report.to_dict(include_api_key=True)})
            return
        from rich.table import Table  # noqa: PLC0415 -- keeps --help fast

        table = Table(title=f"seed {report.package}", title_justify="left")
        table.add_column("table")
        table.add_column("inserted", justify="right")
        for name, count in sorted(report.inserted.items()):
            table.add_row(name, str(count))
        out.out.print(table)
        state = "[green]✓ seeded[/]" if report.changed else "[green]✓[/] already seeded"
        out.out.print(
            f"{state}: usage events {report.window_start:%Y-%m-%d} .. "
            f"{report.window_end:%Y-%m-%d} (exclusive)"
        )
        out.out.print(
            f"  API key local-dev (acme-pro): aiaas_{report.api_key_id}_**** — print it with "
            "`aiaas-db seed --output json`"
        )

    run_command(out, action)


@click.command("purge")
@dsn_option
@click.option(
    "--window",
    type=_Window(_purge_window),
    default="30d",
    show_default=True,
    help="Anonymise users whose deletion was requested longer ago than this (at most 30d).",
)
@click.option("--dry-run", is_flag=True, help="Only list who would be anonymised.")
@_env_option(
    "Environment name (env AIAAS_ENV); in production the PII keys must come from "
    "AIAAS_DB_PII_HASH_KEY / AIAAS_DB_PII_ENCRYPTION_KEY."
)
@output_option
def purge_command(
    *, dsn: str | None, window: str, dry_run: bool, environment: str | None, output: str
) -> None:
    """Anonymise users whose deletion was requested (audited, idempotent).

    Each user's e-mail digest becomes `anonymized$<user_id>`, the encrypted copy is removed,
    anonymized_at and deleted_at are set. PII keys: AIAAS_DB_PII_HASH_KEY and
    AIAAS_DB_PII_ENCRYPTION_KEY (outside production, keys derived from AIAAS_DB_SEED_SECRET
    when unset).
    """
    out = Output(output)

    def action() -> None:
        from aiaas_db.platform._purge import purge  # noqa: PLC0415
        from aiaas_db.platform._seeds import resolve_seed_secret  # noqa: PLC0415

        protector = _protector(environment, resolve_seed_secret("local-dev"))
        report = purge(resolve_dsn(dsn, out), window=window, dry_run=dry_run, protector=protector)
        if out.json:
            out.document({"ok": True, **report.to_dict()})
            return
        what = "would anonymise" if dry_run else "anonymised"
        out.out.print(
            f"[green]✓[/] {what} {report.count} user(s) whose deletion was requested before "
            f"{report.cutoff:%Y-%m-%d %H:%M} UTC"
        )
        for user_id in report.user_ids:
            out.out.print(f"  user {user_id}")

    run_command(out, action)
