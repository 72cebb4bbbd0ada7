"""``aiaas-infra secrets seal|rotate|freshness|unseal-check``.

A value is read from stdin (``--from-stdin``; one trailing newline is dropped), an environment
variable (``--from-env NAME``) or a file (``--from-file PATH``), never from an argument, and it
is never printed or logged. ``AIAAS_SECRETS_DIGEST_KEY``, when set, keys the digest that lets
``rotate`` refuse an unchanged value. ``freshness`` exits 2 when an item is overdue or missing.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from aiaas_infra.cli._common import (
    ExitCode,
    _consoles,
    _emit_json,
    _Exit,
    _load,
    _output_option,
    _spec_option,
)

__all__: list[str] = []

F = TypeVar("F", bound=Callable[..., Any])

DIGEST_KEY_ENV = "AIAAS_SECRETS_DIGEST_KEY"


def _store_path(store: Path | None, spec_path: Path) -> Path:
    if store is not None:
        return store
    env = os.environ.get("AIAAS_INFRA_SEALED")
    return Path(env) if env else spec_path.resolve().parent / "sealed-secrets.yaml"


def _common(func: F) -> F:
    func = click.option(
        "--store",
        "store_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The sealed store [default: AIAAS_INFRA_SEALED or sealed-secrets.yaml beside the "
        "spec].",
    )(func)
    return _spec_option()(func)


def _value_options(func: F) -> F:
    for option in (
        click.option(
            "--from-file",
            "from_file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            default=None,
            help="Read the value from this file (bytes as they are).",
        ),
        click.option(
            "--from-env", "from_env", default=None, help="Read the value from this env variable."
        ),
        click.option("--from-stdin", "from_stdin", is_flag=True, help="Read the value from stdin."),
        click.option(
            "--cert",
            "cert_path",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            required=True,
            help="The controller's sealing certificate (kubeseal --fetch-cert).",
        ),
        click.option("--item", required=True, help="The secret item (as the spec names it)."),
        click.option("--env", "env", required=True, help="The environment."),
    ):
        func = option(func)
    return func


def _read_value(from_stdin: bool, from_env: str | None, from_file: Path | None) -> bytes:
    chosen = [x for x in (from_stdin, from_env, from_file) if x]
    if len(chosen) != 1:
        raise click.UsageError(
            "give the value in exactly one way: --from-stdin, --from-env or "
            "--from-file (never as an argument)"
        )
    if from_stdin:
        data = sys.stdin.buffer.read()
        return data[:-1] if data.endswith(b"\n") else data
    if from_env:
        if from_env not in os.environ:
            raise click.UsageError(f"the environment variable {from_env} is not set")
        return os.environ[from_env].encode()
    assert from_file is not None
    return from_file.read_bytes()


def _digest_key() -> bytes | None:
    key = os.environ.get(DIGEST_KEY_ENV)
    return key.encode() if key else None


def _certificate(path: Path) -> Any:
    from aiaas_infra.secrets._sealing import SealingCertificate  # noqa: PLC0415

    return SealingCertificate.from_pem(path.read_bytes())


def _report_item(  # noqa: PLR0917 -- one call site per command
    action: str, env: str, item: str, store: Any, path: Path, output: str
) -> None:
    sealed = store.get(env, item)
    data = {
        "action": action,
        "env": env,
        "item": item,
        "store": str(path),
        "scope": sealed.scope,
        "namespace": sealed.namespace,
        "secret": sealed.secret,
        "rotated_at": sealed.to_dict()["rotated_at"],
        "certificate": sealed.certificate,
    }
    if output == "json":
        _emit_json(data)
        return
    out, _err = _consoles()
    out.print(
        f"[green]{action}[/] {env}/{item} ({sealed.scope}, {sealed.namespace}/{sealed.secret}) "
        f"at {data['rotated_at']} into {path}",
        highlight=False,
    )


@click.group("secrets")
def secrets_group() -> None:
    """Seal, rotate and check the freshness of each environment's secrets bundle."""


@secrets_group.command("seal")
@_common
@_value_options
@click.option(
    "--scope",
    type=click.Choice(["strict", "namespace-wide", "cluster-wide"]),
    default="strict",
    show_default=True,
    help="Where the sealed value may be opened.",
)
@_output_option("table", "json")
def seal_cmd(
    *,
    spec_path: Path,
    store_path: Path | None,
    env: str,
    item: str,
    cert_path: Path,
    from_stdin: bool,
    from_env: str | None,
    from_file: Path | None,
    scope: str,
    output: str,
) -> None:
    """Seal a new item of an environment's bundle into the store."""
    from aiaas_infra.secrets._secrets import SealedStore, seal_secret  # noqa: PLC0415

    value = _read_value(from_stdin, from_env, from_file)
    spec = _load(spec_path)
    path = _store_path(store_path, spec_path)
    store = seal_secret(
        SealedStore.load(path),
        _certificate(cert_path),
        spec,
        env,
        item,
        value,
        scope=scope,
        digest_key=_digest_key(),
    )
    store.save(path)
    _report_item("sealed", env, item, store, path, output)


@secrets_group.command("rotate")
@_common
@_value_options
@_output_option("table", "json")
def rotate_cmd(
    *,
    spec_path: Path,
    store_path: Path | None,
    env: str,
    item: str,
    cert_path: Path,
    from_stdin: bool,
    from_env: str | None,
    from_file: Path | None,
    output: str,
) -> None:
    """Replace an item with a new value and record when it was rotated."""
    from aiaas_infra.secrets._secrets import SealedStore, rotate_secret  # noqa: PLC0415

    value = _read_value(from_stdin, from_env, from_file)
    spec = _load(spec_path)
    path = _store_path(store_path, spec_path)
    store = rotate_secret(
        SealedStore.load(path),
        _certificate(cert_path),
        spec,
        env,
        item,
        value,
        digest_key=_digest_key(),
    )
    store.save(path)
    _report_item("rotated", env, item, store, path, output)


@secrets_group.command("freshness")
@_common
@click.option("--now", "now", default=None, help="Judge at this ISO 8601 time [default: now].")
@_output_option("table", "json")
def freshness_cmd(spec_path: Path, store_path: Path | None, now: str | None, output: str) -> None:
    """Report each item's age against its rotation period; exit 2 when any is overdue."""
    from aiaas_infra.secrets._secrets import SealedStore, freshness_report  # noqa: PLC0415

    at = None
    if now is not None:
        try:
            at = dt.datetime.fromisoformat(now.replace("Z", "+00:00"))
        except ValueError:
            raise click.UsageError(f"--now {now!r} is not an ISO 8601 time") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
    spec = _load(spec_path)
    report = freshness_report(spec, SealedStore.load(_store_path(store_path, spec_path)), at)
    if output == "json":
        _emit_json(report.to_dict())
    else:
        from rich.table import Table  # noqa: PLC0415

        out, _err = _consoles()
        table = Table(title=f"secret freshness at {report.to_dict()['now']}")
        for column in ("env", "item", "owner", "rotation", "age", "due", "status"):
            table.add_column(column)
        colour = {"fresh": "green", "due-soon": "yellow", "overdue": "red", "missing": "red"}
        for i in report.items:
            d = i.to_dict()
            table.add_row(
                i.env,
                i.name,
                i.owner,
                f"{i.rotation_days} d",
                f"{d['age_days']:.1f} d" if d["age_days"] is not None else "-",
                d["due_at"] or "-",
                f"[{colour[i.status]}]{i.status}[/]",
            )
        out.print(table)
        if not report.ok:
            out.print(
                f"[red]{len(report.overdue)} item(s) overdue or never sealed[/]: rotate "
                "them with `aiaas-infra secrets rotate`"
            )
    raise _Exit(ExitCode.OK if report.ok else ExitCode.CHANGES)


@secrets_group.command("unseal-check")
@_common
@click.option(
    "--private-key",
    "key_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="The controller's private key (PEM), to verify the sealed values open.",
)
@click.option("--env", "env", default=None, help="Only this environment.")
@_output_option("table", "json")
def unseal_check_cmd(
    *, spec_path: Path, store_path: Path | None, key_path: Path, env: str | None, output: str
) -> None:
    """Verify every sealed item opens where it is bound (values are never shown)."""
    import hmac  # noqa: PLC0415

    from aiaas_infra.secrets._sealing import UnsealError, unseal  # noqa: PLC0415
    from aiaas_infra.secrets._secrets import SealedStore, value_digest  # noqa: PLC0415

    spec = _load(spec_path)
    store = SealedStore.load(_store_path(store_path, spec_path))
    key_pem, digest_key = key_path.read_bytes(), _digest_key()
    results: list[dict[str, Any]] = []
    for env_name in sorted(spec.environments):
        if env is not None and env_name != env:
            continue
        for item in sorted(spec.environments[env_name].secret_items, key=lambda i: i.name):
            sealed = store.get(env_name, item.name)
            result: dict[str, Any] = {"env": env_name, "item": item.name, "ok": False}
            if sealed is None:
                result["problem"] = "not sealed"
            else:
                try:
                    value = unseal(
                        key_pem,
                        sealed.encrypted,
                        namespace=spec.namespace(env_name),
                        name=f"{env_name}-secrets",
                        scope=sealed.scope,
                    )
                except UnsealError as exc:
                    result["problem"] = exc.message
                else:
                    if (
                        digest_key is not None
                        and sealed.value_digest is not None
                        and not hmac.compare_digest(
                            sealed.value_digest, value_digest(digest_key, value)
                        )
                    ):
                        result["problem"] = "opens, but does not match its recorded digest"
                    else:
                        result["ok"] = True
            results.append(result)
    ok = all(r["ok"] for r in results)
    if output == "json":
        _emit_json({"ok": ok, "items": results})
    else:
        out, _err = _consoles()
        for r in results:
            mark = "[green]opens[/]" if r["ok"] else f"[red]FAILS[/] ({r['problem']})"
            out.print(f"{r['env']}/{r['item']}: {mark}", highlight=False)
    raise _Exit(ExitCode.OK if ok else ExitCode.ERROR)
