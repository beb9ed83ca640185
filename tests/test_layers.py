"""The house rules, read from the code itself (with ``ast``, not grep).

Imports point one way: foundation <- capabilities <- composition root, and
migrations import nothing from the application. Each table's statements live in
its one owner module under ``monitor/foundation/tables``.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # no store, server or model

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("monitor", "jobs", "alerts", "dashboards", "migrations")
CAPABILITIES = {"monitor.ingest": "ingest", "monitor.review": "review", "jobs": "jobs", "alerts": "alerts",
                "dashboards": "dashboards"}
COMPOSITION_ROOT = ("monitor.app", "monitor.cli", "monitor.scheduler", "monitor.health", "monitor.demo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    """foundation, a capability's name, root, client, package (the bare ``monitor``) or migrations."""
    if module == "monitor":
        return "package"
    if module == "monitor.client":
        return "client"
    if module.startswith("migrations"):
        return "migrations"
    if module == "monitor.foundation" or module.startswith("monitor.foundation."):
        return "foundation"
    for prefix in COMPOSITION_ROOT:
        if module == prefix or module.startswith(prefix + "."):
            return "root"
    for prefix, name in CAPABILITIES.items():
        if module == prefix or module.startswith(prefix + "."):
            return name
    raise AssertionError(f"{module}: not in any layer; add it to one (see monitor/__init__.py)")


def imports(source: str, module: str, is_package: bool) -> set[str]:
    """Every module of ours that ``source`` imports, at any depth (functions included), relative ones resolved."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from pkg import mod` imports pkg.mod when mod is a module; else a name from pkg itself
            subs = [f"{base}.{a.name}" for a in node.names]
            names = subs if all(_existing(n) == n for n in subs) else [base] + subs
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                out.add(name)
    return out


def _existing(name: str) -> str | None:
    """The module ``name`` refers to (a package attribute resolves to its package)."""
    while name:
        path = ROOT / Path(*name.split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return name
        name = name.rpartition(".")[0]
    return None


ALLOWED = {
    "migrations": {"migrations"},
    "package": {"package"},
    "client": {"client", "package"},
    "foundation": {"foundation", "migrations", "package"},
    "root": {"root", "foundation", "client", "package", "migrations", *CAPABILITIES.values()},
}


# The read side may use a capability's public surface: these modules, and nothing else of the capability.
PUBLIC_SURFACES = {
    "dashboards": {"alerts.silence",        # the alerts page lists, creates and expires silences as the API does
                   "monitor.review.queue",  # the /review page hands out and labels items as the API does
                   "alerts.delivery"},      # digests go out through the alert outbox, as notifications do
}


def violations(module: str, imported: set[str]) -> list[str]:
    """What breaks the rule when ``module`` imports ``imported``: a capability imports the foundation
    and itself (and the public surfaces listed for it); the foundation only itself; migrations nothing
    of the application."""
    me = layer(module)
    allowed = ALLOWED.get(me, {"foundation", "package", me})
    surfaces = PUBLIC_SURFACES.get(me, set())
    return [f"{module} ({me}) imports {target} ({layer(target)})"
            for target in sorted({t for t in (_existing(n) for n in imported) if t})
            if layer(target) not in allowed and target not in surfaces]


def all_modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield module_name(path), path


def test_every_module_is_in_a_layer():
    for module, _ in all_modules():
        layer(module)


@pytest.mark.parametrize("module,path", list(all_modules()), ids=lambda x: str(x) if isinstance(x, str) else "")
def test_imports_point_one_way(module, path):
    found = imports(path.read_text(), module, path.name == "__init__.py")
    assert violations(module, found) == []


def test_the_checker_catches_each_kind_of_violation():
    # Each rule the issue names, checked on source text so a regression in the checker shows.
    cases = {
        ("monitor.foundation.metrics", "from jobs.sli import SLI_WINDOWS"): "imports jobs.sli (jobs)",
        ("monitor.foundation.storage", "def f():\n    from dashboards import views"): "dashboards",
        ("jobs.sli", "from alerts.engine import AlertEngine"): "imports alerts.engine (alerts)",
        ("jobs.base", "import alerts"): "imports alerts (alerts)",
        ("migrations.versions.0002_rollups_and_job_runs", "from monitor.foundation.rollups import quantiles_sql"):
            "(migrations) imports monitor.foundation.rollups (foundation)",
        ("dashboards.kpis", "from monitor.cli import main"): "(root)",
        ("alerts.api", "from monitor.ingest.pipeline import Ingestor"): "(ingest)",
        ("monitor.foundation.tables.review", "from .. import auth\nfrom ...ingest import api"): "monitor.ingest.api",
    }
    for (module, source), expected in cases.items():
        found = violations(module, imports(source, module, False))
        assert any(expected in f for f in found), (module, source, found)
    assert violations("jobs.sli", imports("from monitor.foundation.metrics import Point\nfrom monitor.foundation.job import Job",
                                         "jobs.sli", False)) == []
    # A public surface is one module: the capability's others stay closed, and it never points back.
    assert violations("dashboards.views", imports("from alerts import silence", "dashboards.views", False)) == []
    assert violations("dashboards.views", imports("from alerts import dispatch", "dashboards.views", False))
    assert violations("alerts.silence", imports("from dashboards import views", "alerts.silence", False))


# -- one owner per table ------------------------------------------------------------------
TABLES_DIR = ROOT / "monitor" / "foundation" / "tables"
# The tables each owner module may name in its statements besides its own (documented in its docstring).
OWNERS = {
    "requests": {"requests"}, "feedback": {"feedback"}, "rejected": {"rejected_events"},
    "metric_points": {"metric_points"}, "job_runs": {"job_runs"}, "api_keys": {"api_keys"},
    "settings": {"instance_settings"}, "review": {"review_queue", "review_leases", "feedback"},
    "embedding_cache": {"embedding_cache"}, "drift_reports": {"drift_reports"}, "alert_state": {"alert_state"},
    "alert_history": {"alert_history"}, "silences": {"silences"}, "notification_log": {"notification_log"},
    "notification_outbox": {"notification_outbox"}, "otlp_parts": {"otlp_parts"}, "leases": {"leases"},
    # a release and what it is judged on: the hourly values of its dimension, its sides' raw rows
    "releases": {"releases", "requests_1h", "segments_1h", "requests", "feedback"},
    # an evaluator's outcomes, and the sampled answers it is asked about
    "evaluations": {"evaluations", "requests"},
    # the rollup family, rebuilt from the raw tables
    "rollups": {"requests_1m", "requests_1h", "requests_1d", "requests_feature_1h", "requests_feature_1d",
                "segments_1m", "segments_1h", "segments_1d", "feedback_1m", "feedback_1h", "feedback_1d", "requests",
                "feedback"},
}
TABLES = sorted(set().union(*OWNERS.values()) - {"requests", "feedback"}) + ["requests", "feedback"]
_STATEMENT = re.compile(r"\b(?:FROM|INTO|JOIN|TABLE|UPDATE)\s+`?(" + "|".join(TABLES) + r")`?\b")


def named_tables(source: str) -> set[str]:
    """Tables a module's string literals (f-strings included) name in a statement, or insert into by name."""
    found = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= set(_STATEMENT.findall(node.value))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("insert", "insert_columns") \
                and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in TABLES:
            found.add(node.args[0].value)
    return found


def test_only_a_tables_owner_writes_statements_for_it():
    problems = []
    for module, path in all_modules():
        if module.startswith("migrations"):
            continue  # frozen DDL
        tables = named_tables(path.read_text())
        if path.parent == TABLES_DIR and path.stem in OWNERS:
            extra = tables - OWNERS[path.stem]
        else:
            extra = tables
        problems += [f"{module} names table {t}" for t in sorted(extra)]
    assert problems == []


def test_every_table_has_exactly_one_owner():
    owners = {}
    for stem, tables in OWNERS.items():
        assert (TABLES_DIR / f"{stem}.py").is_file()
        own = tables if stem != "review" else {"review_queue", "review_leases"}
        own = own if stem != "rollups" else tables - {"requests", "feedback"}
        own = own if stem not in ("releases", "evaluations") else {stem}
        for t in own:
            assert t not in owners, f"{t} owned by {owners.get(t)} and {stem}"
            owners[t] = stem
    created = set()
    for path in (ROOT / "migrations" / "versions").glob("*.py"):
        created |= set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", path.read_text()))
    created -= {"alembic_version"}
    assert len(created) >= 24, sorted(created)
    assert created - set(owners) == set(), f"tables without an owner: {created - set(owners)}"


def test_the_ownership_check_sees_a_statement_in_the_wrong_place():
    assert named_tables('store.query("SELECT * FROM alert_state FINAL")') == {"alert_state"}
    assert named_tables('x = f"SELECT {c} FROM metric_points WHERE ts > {{lo:DateTime}}"') == {"metric_points"}
    assert named_tables('store.insert("job_runs", rows, cols)') == {"job_runs"}
    assert named_tables('"the requests of a window"') == set()
