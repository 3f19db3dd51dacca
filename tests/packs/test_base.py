"""The plugin contract itself: errors, context, results, integer helpers, the registry."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

import packs
from packs.base import PackContext, PackError, PackInterrupted, PackResult, ceil_div, field_path
from packs.decision import DecisionPack
from packs.diagnostic import DiagnosticPack
from packs.registry import all_packs, get_pack
from packs.url import UrlPack


def test_registry_lists_the_packs_in_catalog_order() -> None:
    packs = all_packs()

    assert [pack.pack_type for pack in packs] == ["decision", "url", "diagnostic"]
    assert [type(pack) for pack in packs] == [DecisionPack, UrlPack, DiagnosticPack]
    assert get_pack("url") is packs[1]  # singletons
    assert get_pack("url") is get_pack("url")
    assert get_pack("nope") is None


def test_every_pack_describes_itself_for_the_catalog() -> None:
    for pack in all_packs():
        assert pack.description
        assert pack.version
        assert pack.input_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert pack.input_schema["additionalProperties"] is False
        assert pack.pricing()["base_usd"].count(".") == 1
        assert len(pack.pricing()["base_usd"].split(".")[1]) == 4


def test_pack_error_carries_a_known_reason_code() -> None:
    error = PackError("URL_BLOCKED", "no")

    assert (error.reason_code, error.detail, str(error)) == ("URL_BLOCKED", "no", "URL_BLOCKED: no")
    with pytest.raises(ValueError, match="unknown pack reason code"):
        PackError("WORKER_TIMEOUT", "a platform code, not a pack's")


def _context(deadline_in: float, stop: bool = False) -> PackContext:
    return PackContext("r", "t", 5_000, time.monotonic() + deadline_in, lambda: stop)


def test_context_check_and_remaining_time() -> None:
    assert 9.0 < _context(10).remaining_s() <= 10.0
    assert _context(-1).remaining_s() == 0.0
    _context(10).check()  # nothing to stop: no exception

    with pytest.raises(PackError) as raised:
        _context(-0.001).check()
    assert raised.value.reason_code == "TIMEBOX_EXCEEDED"

    with pytest.raises(PackInterrupted):
        _context(-1, stop=True).check()  # a cancel wins over the timebox


@pytest.mark.parametrize("cost", [-100, 150, 1.0, True, "100"])
def test_pack_result_refuses_anything_but_int_multiples_of_100(cost: object) -> None:
    with pytest.raises(ValueError, match="cost_micros"):
        PackResult(data={}, cost_micros=cost)  # type: ignore[arg-type]


def test_pack_result_accepts_zero_and_multiples_of_100() -> None:
    assert PackResult(data={"a": 1}, cost_micros=0).cost_micros == 0
    assert PackResult(data={}, cost_micros=5_600).cost_micros == 5_600


def test_integer_ceiling_division() -> None:
    assert [ceil_div(n, 10_240) for n in (0, 1, 10_240, 10_241)] == [0, 1, 1, 2]
    # big enough that a float would have lost the last digit
    assert ceil_div(10**18 + 1, 10) == 10**17 + 1


def test_field_paths() -> None:
    assert field_path([]) == "inputs"
    assert field_path(["options", 2]) == "inputs.options[2]"
    assert field_path(["scores", "A", "price"]) == "inputs.scores.A.price"


def test_the_app_config_imports_without_settings() -> None:
    from packs.apps import PacksConfig

    assert PacksConfig.name == "packs"


def test_packs_import_only_dpp_money_and_no_django_or_other_app() -> None:
    forbidden = {"django", "rest_framework", "dpp", "billing", "runs", "reaper", "config"}
    # ARCHITECTURE: packs imports only dpp's money and its outbound HTTP plumbing
    allowed = {"dpp.money", "dpp.http.outbound"}
    root = Path(packs.__file__).parent
    offenders = []
    for source in root.rglob("*.py"):
        if source.name == "apps.py" and source.parent == root:
            continue  # the one allowed django.apps import
        for node in ast.walk(ast.parse(source.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{source.name}: {name}"
                for name in names
                if name.split(".")[0] in forbidden and name not in allowed and not name.startswith("dpp.http.outbound")
            ]
    assert offenders == []
    # What dpp.money imports in turn must not bring Django in either.
    probe = "import sys, packs.registry; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=root.parent)
    assert loaded.stdout.strip() == "[]"
