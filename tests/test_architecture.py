"""docs/ARCHITECTURE.md tells the truth: every dotted name it shows exists, and the imports run the way it says."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("config", "dpp", "billing", "runs", "packs", "reaper")
DOTTED = re.compile(r"\b(?:%s)(?:\.[A-Za-z_][A-Za-z0-9_]*)+" % "|".join(APPS))  # noqa: UP031 - a regex alternation

# What each app may import of the others (ARCHITECTURE "Which way the imports run"); config may import all.
# config.adapters is a leaf below them all (it imports libraries only).
MAY_IMPORT = {
    "dpp": {"config.adapters"},
    "billing": {"dpp", "config.adapters"},
    "packs": {"dpp.money", "dpp.http.outbound"},
    "runs": {"dpp", "billing", "packs", "config.adapters"},
    "reaper": {"dpp", "billing", "packs", "runs", "config.adapters"},
}


def _resolve(dotted: str) -> bool:
    """True if `dotted` is a module, or an attribute (at any depth) of the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def architecture_names() -> list[str]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    # `manage.py` and file names like `billing/sql.py` are paths, not dotted names; strip a trailing `.py`.
    names = {match.rstrip(".") for match in DOTTED.findall(text)}
    return sorted(name for name in names if not name.endswith(".py") and name.count(".") >= 1)


def test_the_document_names_something() -> None:
    assert len(architecture_names()) >= 20


@pytest.mark.parametrize("dotted", architecture_names())
def test_every_dotted_name_in_the_architecture_exists(dotted: str) -> None:
    assert _resolve(dotted), f"docs/ARCHITECTURE.md names {dotted}, which does not exist"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _allowed(module: str, own: str) -> bool:
    top = module.split(".", maxsplit=1)[0]
    if top not in APPS or top == own:
        return True
    return any(module == rule or module.startswith(rule + ".") for rule in MAY_IMPORT[own])


@pytest.mark.parametrize("app", sorted(MAY_IMPORT))
def test_imports_run_one_way(app: str) -> None:
    wrong = []
    for path in sorted((ROOT / app).rglob("*.py")):
        modules = _imports(path)
        # `from dpp.http import outbound` names the module dpp.http.outbound: judge the longest form only.
        bad = {m for m in modules if not _allowed(m, app) and not any(o.startswith(m + ".") for o in modules)}
        wrong += [f"{path.relative_to(ROOT)} imports {module}" for module in sorted(bad)]
    assert not wrong, "\n".join(wrong)


def test_config_adapters_import_no_app() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / "config" / "adapters").rglob("*.py"))
        for module in sorted(_imports(path))
        if module.split(".")[0] in APPS and not module.startswith("config.adapters")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_import_rule_can_fail() -> None:
    assert not _allowed("runs.models", "billing")
    assert not _allowed("billing.models", "packs")
    assert _allowed("dpp.money", "packs")
    assert not _allowed("dpp.models", "packs")
    assert not _resolve("billing.services.settle_that_does_not_exist")
