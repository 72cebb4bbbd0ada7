"""``aiaas-infra access issue|revoke`` and ``aiaas-infra handoff serve|issue-key``.

``access`` talks to the cluster with an administrator kubeconfig (``--kubeconfig``, default
``KUBECONFIG`` or ``~/.kube/config``). A refused request (unknown environment or role, a TTL
too long, break-glass without ``--incident``) exits 64 (USAGE) and names the rule.

``handoff serve`` runs the handoff API under uvicorn (the ``serve`` extra) with
:func:`aiaas_core.serve`: SIGTERM or Ctrl-C stops it gracefully. It accepts the API
keys listed in ``AIAAS_HANDOFF_API_KEYS`` (comma-separated ``subject:key_id:role[+role]:digest``
entries; only digests, made with the HMAC key in ``AIAAS_HANDOFF_API_KEY_HASH_KEY``);
``handoff issue-key --role app-team`` prints a new key and its entry.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import click

from aiaas_infra.cli._common import ExitCode, _consoles, _emit_json, _Exit, _load

__all__: list[str] = []

KEYS_ENV: Final = "AIAAS_HANDOFF_API_KEYS"
HASH_KEY_ENV: Final = "AIAAS_HANDOFF_API_KEY_HASH_KEY"
_DURATION: Final = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> timedelta:
    """``"8h"``, ``"90m"``, ``"1h30m"``, ``"600s"`` or plain seconds ``"3600"``."""
    value = text.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    match = _DURATION.fullmatch(value)
    if not value or match is None:
        raise click.BadParameter(f"{text!r} is not a duration like 8h, 90m, 1h30m or 3600")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _ttl_option(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> timedelta | None:
    return None if value is None else parse_duration(value)


def _output_option(func: Any) -> Any:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="How to print the result (json is for machines).",
    )(func)


def _refused(exc: Exception, output: str) -> Exception:
    from aiaas_core import AiaasError  # noqa: PLC0415

    _out, err = _consoles()
    code = exc.code if isinstance(exc, AiaasError) else "ERROR"
    message = exc.message if isinstance(exc, AiaasError) else str(exc)
    if output == "json":
        _emit_json({"error": message, "code": code})
    err.print(f"refused [{code}]: {message}", markup=False, highlight=False)
    return _Exit(ExitCode.USAGE)


def _kubeconfig_path(kubeconfig: Path | None) -> Path:
    return kubeconfig or Path(os.environ.get("KUBECONFIG", "~/.kube/config")).expanduser()


@asynccontextmanager
async def _kube(kubeconfig: Path | None, context: str | None) -> AsyncIterator[Any]:
    from kubernetes_asyncio import client, config  # noqa: PLC0415

    cfg = client.Configuration()
    path = _kubeconfig_path(kubeconfig)
    await config.load_kube_config(
        config_file=str(path), context=context, client_configuration=cfg, persist_config=False
    )
    async with client.ApiClient(cfg) as api:
        yield api


def _kube_options(func: Any) -> Any:
    func = click.option("--context", default=None, help="The kubeconfig context to use.")(func)
    return click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="An administrator kubeconfig [default: KUBECONFIG or ~/.kube/config].",
    )(func)


@click.group("access")
def access_group() -> None:
    """Issue and revoke short-lived access packages for an environment and role."""


@access_group.command("issue")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--env", "env", required=True, help="The environment.")
@click.option(
    "--role",
    required=True,
    help="platform-engineer, app-team, read-only or break-glass (needs --incident).",
)
@click.option(
    "--ttl",
    default=None,
    callback=_ttl_option,
    metavar="DURATION",
    help="Lifetime: 10m to 24h (8h in production) [default: the longest allowed].",
)
@click.option("--incident", default=None, help="The incident id (required for break-glass).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="A new, empty directory for the package (mode 0700, files 0600).",
)
@click.option(
    "--package-base-url",
    default=None,
    help="Where the directory will be published [default: its file:// URI].",
)
@_kube_options
@_output_option
def access_issue(
    *,
    spec_path: Path,
    env: str,
    role: str,
    ttl: timedelta | None,
    incident: str | None,
    out_dir: Path,
    package_base_url: str | None,
    kubeconfig: Path | None,
    context: str | None,
    output: str,
) -> None:
    """Issue a package: kubeconfig, rbac.json, observability links and the handoff document."""
    from aiaas_infra.access._access import AccessRequestError, check_access_request  # noqa: PLC0415
    from aiaas_infra.access._access import issue_access as issue  # noqa: PLC0415
    from aiaas_infra.access._handoff import EnvironmentLockedError  # noqa: PLC0415

    out, err = _consoles()
    spec = _load(spec_path)
    try:  # refuse a bad request before touching the cluster
        check_access_request(spec, env, role, ttl=ttl, incident=incident)
    except (AccessRequestError, EnvironmentLockedError) as exc:
        raise _refused(exc, output) from None

    async def run() -> Any:
        async with _kube(kubeconfig, context) as api:
            return await issue(
                spec,
                env,
                role,
                kube=api,
                out_dir=out_dir,
                ttl=ttl,
                incident=incident,
                package_base_url=package_base_url,
            )

    try:
        package = asyncio.run(run())
    except AccessRequestError as exc:
        raise _refused(exc, output) from None
    if output == "json":
        _emit_json(package.to_dict())
        return
    out.print(
        f"issued package {package.package_id}: {package.role} in {package.environment} "
        f"(namespace {package.namespace}) until {package.to_dict()['expiresAt']}",
        markup=False,
    )
    for path in package.files:
        out.print(f"  {path}", markup=False, highlight=False)
    err.print(
        f"revoke with: aiaas-infra access revoke --spec {spec_path} --package {out_dir}",
        markup=False,
        highlight=False,
    )


@access_group.command("revoke")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--package",
    "package_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The package directory (its kubeconfig is deleted and the revocation recorded).",
)
@click.option("--env", "env", default=None, help="With --id, when the directory is not at hand.")
@click.option("--id", "package_id", default=None, help="The package id (package.json packageId).")
@click.option("--reason", default="", help="Why (recorded in the audit event).")
@_kube_options
@_output_option
def access_revoke(
    *,
    spec_path: Path,
    package_dir: Path | None,
    env: str | None,
    package_id: str | None,
    reason: str,
    kubeconfig: Path | None,
    context: str | None,
    output: str,
) -> None:
    """Revoke a package: its token stops working at once."""
    from aiaas_core import AiaasError  # noqa: PLC0415
    from aiaas_infra.access._access import revoke_access, revoke_package  # noqa: PLC0415

    out, _err = _consoles()
    if (package_dir is None) == (env is None or package_id is None):
        raise click.UsageError("give --package DIR, or --env and --id (not both)")
    spec = _load(spec_path)

    async def run() -> Any:
        async with _kube(kubeconfig, context) as api:
            if package_dir is not None:
                return await revoke_package(spec, package_dir, kube=api, reason=reason)
            assert env is not None
            assert package_id is not None
            return await revoke_access(spec, env, package_id, kube=api, reason=reason)

    try:
        result = asyncio.run(run())
    except AiaasError as exc:
        if exc.status >= 500:
            raise
        raise _refused(exc, output) from None
    if output == "json":
        _emit_json(result.to_dict())
        return
    state = "was already revoked" if result.already_revoked else "revoked"
    out.print(f"package {result.package_id} in {result.environment} {state}", markup=False)


# --------------------------------------------------------------------------------------------
# handoff


def _key_records(environ: Mapping[str, str]) -> list[Any]:
    from aiaas_core import parse_api_key_entries  # noqa: PLC0415

    try:
        return parse_api_key_entries(environ.get(KEYS_ENV, ""))
    except ValueError as exc:  # "entry N: ..." names the position and shape, never the entry
        raise click.UsageError(f"{KEYS_ENV} {exc}") from None


def _hasher(environ: Mapping[str, str]) -> Any:
    from aiaas_core import HashKey, KeyedHasher  # noqa: PLC0415

    secret = environ.get(HASH_KEY_ENV)
    if not secret:
        raise click.UsageError(f"set {HASH_KEY_ENV} (the HMAC key API key digests are made with)")
    try:
        key = HashKey.from_text("v1", secret)
    except ValueError as exc:  # the message names lengths, never the key
        raise click.UsageError(f"{HASH_KEY_ENV}: {exc}") from None
    return KeyedHasher([key], "v1")


@click.group("handoff")
def handoff_group() -> None:
    """The environment handoff API."""


@handoff_group.command("serve")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--state",
    "state_location",
    default=None,
    help="State directory or s3://bucket/prefix whose environment statuses are reported.",
)
@click.option(
    "--package-base-url",
    default=None,
    help="Where issued packages are published [default: file:// URI of ./access-packages].",
)
@click.option("--ingress-domain", default=None, help="Ingress base domain suffix.")
def handoff_serve(
    *,
    spec_path: Path,
    host: str,
    port: int,
    state_location: str | None,
    package_base_url: str | None,
    ingress_domain: str | None,
) -> None:
    """Serve the handoff API until SIGTERM or Ctrl-C."""
    if importlib.util.find_spec("uvicorn") is None:
        raise click.UsageError("the handoff server needs uvicorn: pip install 'aiaas-infra[serve]'")
    from aiaas_core import (  # noqa: PLC0415
        ApiKeyVerifier,
        InMemoryApiKeyStore,
        ServiceUnavailableError,
        serve,
    )
    from aiaas_infra.access._handoff import create_handoff_app  # noqa: PLC0415
    from aiaas_infra.provision._state import open_state  # noqa: PLC0415
    from aiaas_telemetry import load_profile, setup  # noqa: PLC0415

    spec = _load(spec_path)
    environ = os.environ
    records = _key_records(environ)
    verifier = ApiKeyVerifier(InMemoryApiKeyStore(records), _hasher(environ), touch_interval=None)
    telemetry = setup(load_profile({"service_name": "aiaas-handoff"}, environ=environ))
    try:
        app = create_handoff_app(
            spec,
            telemetry=telemetry,
            authenticate=verifier.verify,
            package_base_url=package_base_url or Path("access-packages").resolve().as_uri(),
            ingress_domain=ingress_domain,
            store=open_state(state_location) if state_location else None,
        )
        try:
            serve(app, host=host, port=port)  # returns after SIGTERM/SIGINT, requests done
        except ServiceUnavailableError as exc:  # the port is taken, or the app did not start
            _consoles()[1].print(f"the handoff API could not start: {exc.message}", markup=False)
            raise _Exit(ExitCode.ERROR) from None
    finally:
        telemetry.shutdown()  # bounded, even with the collector gone


@handoff_group.command("issue-key")
@click.option("--role", "roles", multiple=True, required=True, help="A role (repeatable).")
@click.option("--subject", default="operator", show_default=True, help="Who the key is for.")
def handoff_issue_key(roles: tuple[str, ...], subject: str) -> None:
    """Print a new API key (once) and its AIAAS_HANDOFF_API_KEYS entry (a digest)."""
    from aiaas_core import ApiKeyVerifier, InMemoryApiKeyStore  # noqa: PLC0415

    verifier = ApiKeyVerifier(InMemoryApiKeyStore(), _hasher(os.environ))
    key, record = verifier.issue(subject=subject, roles=list(roles))
    entry = f"{subject}:{record.key_id}:{'+'.join(record.roles)}:{record.digest}"
    sys.stdout.write(f"API key (shown once): {key.token}\n{KEYS_ENV} entry: {entry}\n")
