"""The fault campaign's framework: seed, bounds, figures and planted secrets.

Every campaign is one module ``chaos/test_<campaign>.py``. It draws its randomness from
``chaos_rng`` (seeded from ``--chaos-seed`` and the test's id, so a failure replays with the same
seed), keeps to a ``chaos_budget`` (its count, or its time budget, whichever comes first; ``--long``
runs the full counts with no time budget), asserts its invariants and reports its figures with
``chaos_report.figure(...)``. The figures are written to ``--chaos-results`` (JSON) as they come
and printed as a table (also written as Markdown beside the JSON) at the end of the run.

``chaos_secrets`` holds the values planted through the run (a Linode token, API keys, a database
password, PII values) and ``scan(...)`` looks for them in texts, bytes, files and folders; the
captured output of every chaos test is scanned too, and ``test_secrets.py`` (run last) fails when
any planted value was found anywhere.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import string
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / ".chaos" / "results.json"
# Files larger than this are scanned in their first 64 MiB only (logs of a long run).
_SCAN_LIMIT = 64 * 1024 * 1024


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "fault campaign")
    group.addoption(
        "--chaos-seed",
        type=int,
        default=None,
        help="Seed of every campaign's randomness (default: a random one, printed; pass it "
        "again to replay a failure).",
    )
    group.addoption(
        "--long",
        action="store_true",
        default=False,
        help="Run the issue's full counts, with no time budget (default: reduced counts, each "
        "campaign bounded in time).",
    )
    group.addoption(
        "--chaos-results",
        default=str(DEFAULT_RESULTS),
        help="JSON file the figures are written to (default .chaos/results.json); the table "
        "goes beside it as .md.",
    )


# --- seed, results file ---------------------------------------------------------------------


@dataclass
class _Run:
    seed: int
    long: bool
    results: Path
    started: str
    figures: list[dict[str, Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "long": self.long,
            "started": self.started,
            "replay": f"nox -s chaos -- --chaos-seed {self.seed}"
            + (" --long" if self.long else ""),
            "figures": self.figures,
        }

    def write(self) -> None:
        self.results.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.results.with_name(self.results.name + ".tmp")
        tmp.write_text(json.dumps(self.document(), indent=2) + "\n")
        tmp.replace(self.results)


_RUN_KEY = pytest.StashKey[_Run]()


def _run_of(config: pytest.Config) -> _Run:
    return config.stash[_RUN_KEY]


def pytest_configure(config: pytest.Config) -> None:
    seed = config.getoption("--chaos-seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    run = _Run(
        seed=int(seed),
        long=bool(config.getoption("--long")),
        results=Path(config.getoption("--chaos-results")).resolve(),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    config.stash[_RUN_KEY] = run
    run.write()  # a fresh file per run: figures of an older run never mix in


def pytest_report_header(config: pytest.Config) -> str:
    run = _run_of(config)
    mode = "long (full counts)" if run.long else "default bound (reduced counts, time budgets)"
    return f"chaos seed: {run.seed} ({mode}); replay: {run.document()['replay']}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``test_secrets.py`` last: it judges the scans of every campaign before it."""
    items.sort(key=lambda item: item.path.name == "test_secrets.py")


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chaos_seed(request: pytest.FixtureRequest) -> int:
    """The run's seed (``--chaos-seed``, else random and printed)."""
    return _run_of(request.config).seed


@pytest.fixture(scope="session")
def chaos_long(request: pytest.FixtureRequest) -> bool:
    """Whether ``--long`` asked for the full counts."""
    return _run_of(request.config).long


@pytest.fixture
def chaos_rng(request: pytest.FixtureRequest, chaos_seed: int) -> random.Random:
    """A random generator seeded from the run's seed and this test's id."""
    return random.Random(f"{chaos_seed}:{request.node.nodeid}")  # noqa: S311 -- faults, not keys


class ChaosReport:
    """Appends figures to the run's results file as they are measured."""

    def __init__(self, run: _Run, test: str) -> None:
        self._run = run
        self._test = test

    @property
    def seed(self) -> int:
        return self._run.seed

    def figure(
        self,
        campaign: str,
        name: str,
        value: float | str,
        *,
        unit: str = "",
        bound: str = "",
    ) -> None:
        """Record ``name = value`` of ``campaign``; ``bound`` says what it must stay within."""
        self._run.figures.append(
            {
                "campaign": campaign,
                "name": name,
                "value": value,
                "unit": unit,
                "bound": bound,
                "test": self._test,
            }
        )
        self._run.write()


@pytest.fixture
def chaos_report(request: pytest.FixtureRequest) -> ChaosReport:
    """``chaos_report.figure(campaign, name, value, unit=..., bound=...)``."""
    return ChaosReport(_run_of(request.config), request.node.nodeid)


class Budget:
    """A campaign's bound: its count, or its time budget, whichever comes first.

    ``for i in budget: ...`` runs iteration ``i`` (from 0) while both allow; afterwards
    ``ran`` says how many ran and ``stopped_by`` whether the count (``"count"``) or the time
    budget (``"time"``) ended it (``"tries"``: too many iterations were :meth:`not_counted`).
    With ``--long`` the count is the issue's full count and there is no time budget.
    """

    def __init__(self, count: int, seconds: float | None) -> None:
        if count < 1:
            raise ValueError(f"a budget needs a count of at least 1, got {count}")
        self.count = count
        self.seconds = seconds
        self.ran = 0
        self.stopped_by = "count"
        self.started = time.monotonic()
        self._counted = True

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float | None:
        """Seconds left of the time budget (``None``: unbounded)."""
        return None if self.seconds is None else max(0.0, self.seconds - self.elapsed)

    def __iter__(self) -> Iterator[int]:
        self.started = time.monotonic()
        tries = 0
        while self.ran < self.count and tries < 3 * self.count:
            if self.seconds is not None and self.elapsed >= self.seconds:
                self.stopped_by = "time"
                return
            tries += 1
            self._counted = True
            yield self.ran
            if self._counted:
                self.ran += 1
        if self.ran < self.count:
            self.stopped_by = "tries"

    def not_counted(self) -> None:
        """The current iteration did not do what the count counts (a kill that came too late):
        it does not count (at most ``3 * count`` iterations in all)."""
        self._counted = False

    def describe(self) -> str:
        budget = "" if self.seconds is None else f", time budget {self.seconds:.0f} s"
        return f"{self.ran} of {self.count} (stopped by {self.stopped_by}{budget})"


class BudgetFactory:
    def __init__(self, long: bool) -> None:
        self.long = long

    def __call__(self, *, full: int, default: int, seconds: float) -> Budget:
        """``full`` runs under ``--long`` (no time budget); else ``default`` within ``seconds``."""
        return Budget(full, None) if self.long else Budget(default, seconds)


@pytest.fixture
def chaos_budget(chaos_long: bool) -> BudgetFactory:
    """``chaos_budget(full=100, default=20, seconds=120)`` -> a :class:`Budget`."""
    return BudgetFactory(chaos_long)


# --- planted secrets ------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretHit:
    """A planted value (``secret``: its name, never the value) found in ``where``."""

    secret: str
    where: str
    form: str

    def __str__(self) -> str:
        return f"{self.secret} ({self.form}) in {self.where}"


def _forms(value: str) -> dict[str, bytes]:
    """The shapes a leaked value takes: as is, URL-quoted, base64 and JSON-escaped."""
    forms = {
        "raw": value.encode(),
        "url-quoted": quote(value, safe="").encode(),
        "base64": base64.b64encode(value.encode()).rstrip(b"="),
        "json": json.dumps(value)[1:-1].encode(),
    }
    unique: dict[str, bytes] = {}
    for name, form in forms.items():
        if form not in unique.values():
            unique[name] = form
    return unique


class PlantedSecrets:
    """Secret values derived from the run's seed, planted through the campaigns.

    Attributes are the values themselves (hand them to the components as their real secrets);
    :meth:`scan` finds them in texts, bytes, files and folders, and keeps a ledger of the places
    it looked at and the hits, which ``test_secrets.py`` judges at the end of the run.
    """

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"{seed}:planted-secrets")  # noqa: S311 -- replayable test values
        alnum = string.ascii_letters + string.digits

        def pick(chars: str, n: int) -> str:
            return "".join(rng.choice(chars) for _ in range(n))

        self.linode_token = pick("0123456789abcdef", 64)
        self.api_key = "sk-chaos-" + pick(alnum, 40)
        self.admin_api_key = "ak-chaos-" + pick(alnum, 32)
        self.db_password = "Pw-" + pick(alnum, 24)
        self.pii_hash_key = base64.b64encode(rng.randbytes(32)).decode()
        self.pii_encryption_key = base64.b64encode(rng.randbytes(32)).decode()
        self.pii_email = f"zelda.{pick('abcdefghijklmnopqrstuvwxyz', 10)}@chaos.example.org"
        self.pii_name = f"Zelda Quenby-{pick(string.ascii_uppercase, 8)}"
        self.pii_phone = f"+1-555-{rng.randrange(1000, 9999)}-{rng.randrange(1000, 9999)}"
        self.places_scanned = 0
        self.hits: list[SecretHit] = []
        self._patterns = [
            (name, form_name, form)
            for name, value in self.values.items()
            for form_name, form in _forms(value).items()
        ]

    @property
    def values(self) -> dict[str, str]:
        """Name -> planted value."""
        return {
            "linode_token": self.linode_token,
            "api_key": self.api_key,
            "admin_api_key": self.admin_api_key,
            "db_password": self.db_password,
            "pii_hash_key": self.pii_hash_key,
            "pii_encryption_key": self.pii_encryption_key,
            "pii_email": self.pii_email,
            "pii_name": self.pii_name,
            "pii_phone": self.pii_phone,
        }

    def pii_env(self) -> dict[str, str]:
        """aiaas-db's PII keys, as its commands read them from the environment."""
        return {
            "AIAAS_DB_PII_HASH_KEY": self.pii_hash_key,
            "AIAAS_DB_PII_ENCRYPTION_KEY": self.pii_encryption_key,
        }

    def _scan_bytes(self, data: bytes, where: str) -> list[SecretHit]:
        self.places_scanned += 1
        found = [
            SecretHit(name, where, form_name)
            for name, form_name, form in self._patterns
            if form in data
        ]
        self.hits.extend(found)
        return found

    def scan(
        self, items: Iterable[str | bytes | os.PathLike[str]], where: str = ""
    ) -> list[SecretHit]:
        """Every planted value found in ``items``: strings and bytes are scanned as they are,
        paths as files (a folder: every file under it). ``where`` labels texts in the hits."""
        found: list[SecretHit] = []
        for n, item in enumerate(items):
            if isinstance(item, str | bytes):
                data = item.encode() if isinstance(item, str) else item
                found += self._scan_bytes(data, where or f"text #{n}")
                continue
            path = Path(item)
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                if not file.is_file():
                    continue
                with file.open("rb") as fh:
                    data = fh.read(_SCAN_LIMIT)
                found += self._scan_bytes(data, f"{where + ': ' if where else ''}{file}")
        return found


_SECRETS_KEY = pytest.StashKey[PlantedSecrets]()


def _secrets_of(config: pytest.Config) -> PlantedSecrets:
    if _SECRETS_KEY not in config.stash:
        config.stash[_SECRETS_KEY] = PlantedSecrets(_run_of(config).seed)
    return config.stash[_SECRETS_KEY]


@pytest.fixture(scope="session")
def chaos_secrets(request: pytest.FixtureRequest) -> PlantedSecrets:
    """The planted secret values and ``scan(paths_or_texts) -> list[SecretHit]``."""
    return _secrets_of(request.config)


# --- reports: the seed on every failure, captured output scanned, the table -----------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    run = _run_of(item.config)
    # Each phase's report repeats the sections of the phases before it: scan this phase's only.
    texts = [content for title, content in report.sections if title.endswith(f" {report.when}")]
    if texts:
        _secrets_of(item.config).scan(texts, where=f"captured output of {item.nodeid}")
    if report.failed:
        report.sections.append(
            ("chaos seed", f"replay with: {run.document()['replay']} -k '{item.name}'")
        )
    return report


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table_rows(figures: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            str(f["campaign"]),
            str(f["name"]),
            _cell(f["value"]) + (f" {f['unit']}" if f.get("unit") else ""),
            str(f.get("bound") or ""),
        ]
        for f in figures
    ]


def markdown_table(document: dict[str, Any]) -> str:
    header = ["campaign", "figure", "value", "bound"]
    rows = table_rows(document["figures"])
    lines = [
        f"# Fault campaign: seed {document['seed']}"
        + (" (--long)" if document["long"] else " (default bound)"),
        "",
        f"Started {document['started']}; replay: `{document['replay']}`",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    run = _run_of(config)
    document = run.document()
    header = ["campaign", "figure", "value", "bound"]
    rows = table_rows(run.figures)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    write = terminalreporter.write_line
    terminalreporter.section(f"chaos figures (seed {run.seed})")
    write("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    write("  ".join("-" * w for w in widths))
    for row in rows:
        write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    markdown = run.results.with_suffix(".md")
    markdown.write_text(markdown_table(document))
    write(f"figures: {run.results} and {markdown}; replay: {document['replay']}")
