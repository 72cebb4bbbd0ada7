"""``aiaas-db lint`` and ``aiaas-db docs``.

Exit codes (as for every aiaas-db command): 0 clean / docs current, 3 lint violations (errors;
warnings alone exit 0) or docs out of date (``--check``), 2 usage, 5 an unreadable change-set
folder, 7 PostgreSQL unreachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aiaas_db._errors import DatabaseUnavailableError
from aiaas_db.cli._common import EXIT_FAILED, EXIT_OK, Output, output_option, run_command

if TYPE_CHECKING:
    import psycopg

    from aiaas_db.migrations._changesets import ChangeSetSource
    from aiaas_db.platform._classification import Classification
    from aiaas_db.quality._lint import LintReport

__all__: list[str] = []


def _connect(dsn: str) -> psycopg.Connection[Any]:
    import psycopg  # noqa: PLC0415 -- keeps --help fast

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        message = str(exc).replace(dsn, "<dsn>")
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL: {message}. Check that the server runs and --dsn is "
            "right"
        ) from None


def _classification(path: Path | None, platform: bool) -> tuple[Classification | None, list[str]]:
    from aiaas_db.platform._classification import (  # noqa: PLC0415 -- keeps --help fast
        ClassificationError,
        load_classification,
        platform_classification,
    )

    try:
        if path is not None:
            return load_classification(path), []
        return (platform_classification() if platform else None), []
    except ClassificationError as exc:
        return None, list(exc.problems)


def run_lint(
    *, source: Path | None, dsn: str | None, classification_path: Path | None
) -> LintReport:
    """What ``aiaas-db lint`` checks: the platform's sets (or ``source``), and ``dsn``'s catalog."""
    from aiaas_db.platform._components import PLATFORM_COMPONENTS, platform_source  # noqa: PLC0415
    from aiaas_db.quality._lint import (  # noqa: PLC0415 -- keeps --help fast
        LintReport,
        lint_catalog,
        lint_change_sets,
    )
    from aiaas_db.quality._rules import LintViolation  # noqa: PLC0415 -- keeps --help fast

    platform = source is None
    classification, problems = _classification(classification_path, platform)
    where = str(classification_path) if classification_path else "classification"
    report = LintReport(
        [LintViolation("AIAAS-L017", where, f"{p}: fix the classification file") for p in problems],
        [],
    )
    sources: list[ChangeSetSource | Path] = (
        [platform_source(c) for c in PLATFORM_COMPONENTS] if source is None else [source]
    )
    report += lint_change_sets(sources, classification=classification)
    if dsn:
        with _connect(dsn) as conn:
            report += lint_catalog(conn, classification=classification)
    return report


@click.command("lint")
@click.option(
    "--source",
    "-s",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of change sets to lint (default: the platform's own operational and analytics "
    "sets).",
)
@click.option(
    "--dsn",
    help="Also lint the live catalog of this database (PostgreSQL URL or key=value DSN).",
)
@click.option(
    "--classification",
    "classification_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Classification file (the contract's format plus table/column). Default: the "
    "platform's aiaas_db/schemas/classification.yml for the platform's sets; none for --source "
    "sets (then the classification rules are skipped).",
)
@output_option
def lint_command(
    *, source: Path | None, dsn: str | None, classification_path: Path | None, output: str
) -> None:
    """Check change sets (and a live catalog) against the schema conventions.

    Every violation names its rule (AIAAS-L0xx), where (file:line or table.column) and what to
    do. Exit 3 when any rule of severity error is broken; warnings alone exit 0.
    """
    out = Output(output)

    def action() -> int:
        report = run_lint(source=source, dsn=dsn, classification_path=classification_path)
        if out.json:
            out.document(report.to_dict())
        else:
            from rich.markup import escape  # noqa: PLC0415 -- keeps --help fast

            for v in report.violations:  # one plain line each: grep- and editor-friendly
                click.echo(f"{v.location}: {v.severity} {v.rule} {v.name}: {v.message}")
            mark = "[green]✓[/]" if report.ok else "[red]✗[/]"
            out.out.print(
                f"{mark} {len(report.errors)} error(s), {len(report.warnings)} warning(s); "
                f"checked {escape('; '.join(report.checked))}"
            )
        return EXIT_OK if report.ok else EXIT_FAILED

    run_command(out, action)


@click.command("docs")
@click.option(
    "--dsn",
    help="Read the catalog of this (migrated) database; default: apply the platform sets to a "
    "throwaway local PostgreSQL.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for data-dictionary.md, erd.md and changelog.md (default: packages/aiaas-db/docs "
    "of the checkout around the current folder).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 3 with a unified diff when the files in --out are out of date.",
)
@output_option
def docs_command(*, dsn: str | None, out_dir: Path | None, check: bool, output: str) -> None:
    """Generate the data dictionary, ERD and changelog of the platform schema."""
    out = Output(output)
    from aiaas_db.quality._docs import default_docs_dir  # noqa: PLC0415 -- keeps --help fast

    target = out_dir or default_docs_dir()
    if target is None:
        raise click.UsageError(
            "no packages/aiaas-db checkout around the current folder: pass --out DIR"
        )

    def action() -> int:
        from aiaas_db.quality._docs import platform_docs  # noqa: PLC0415 -- keeps --help fast

        docs = platform_docs(dsn)
        if check:
            diffs = docs.diff(target)
            if out.json:
                out.document({"ok": not diffs, "out": str(target), "diff": "".join(diffs)})
            elif diffs:
                click.echo("".join(diffs), nl=False)
                out.err.print(
                    f"[red]✗[/] {len(diffs)} file(s) in {target} are out of date: run "
                    "`aiaas-db docs` and commit the result"
                )
            else:
                out.out.print(f"[green]✓[/] docs in {target} are current")
            return EXIT_FAILED if diffs else EXIT_OK
        written = docs.write(target)
        if out.json:
            out.document({"ok": True, "written": [str(p) for p in written]})
        else:
            for path in written:
                out.out.print(f"[green]✓[/] wrote {path}")
        return EXIT_OK

    run_command(out, action)
