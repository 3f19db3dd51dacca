"""config.adapters: each override of a library's internals fails here as soon as the pinned library changes.

An adapter copies or relies on private code of one release (WRITTEN_AGAINST: the distribution, its version, a
hash of the source of each private method, the private attributes it reads). Another version installed, or the
same version with other sources, is a failure: re-read the adapter against the new code, then update its record
— or drop it, if the library fixed what it stands in for (docs/decisions.md, "Library overrides").
"""

from __future__ import annotations

import importlib
import inspect
from importlib import metadata

import pytest

from config.adapters import ADAPTERS, WrittenAgainst, resolve, source_sha256


def _written_against(module: str) -> WrittenAgainst:
    record = importlib.import_module(module).WRITTEN_AGAINST
    assert isinstance(record, WrittenAgainst), module
    return record


@pytest.mark.parametrize("module", ADAPTERS)
def test_the_installed_library_is_the_release_the_adapter_was_written_against(module: str) -> None:
    record = _written_against(module)
    assert metadata.version(record.distribution) == record.version, f"{module}: re-read it against the new release"
    assert _pins().get(record.distribution.lower()) == record.version, f"{module}: requirements.txt pins another"


@pytest.mark.parametrize("module", ADAPTERS)
def test_the_private_code_it_relies_on_is_unchanged(module: str) -> None:
    record = _written_against(module)
    assert record.sources, module
    changed = {name for name, digest in record.sources.items() if source_sha256(name) != digest}
    assert changed == set(), f"{module}: these changed in the installed {record.distribution}"
    for owner, names in record.attributes.items():
        source = inspect.getsource(resolve(owner))  # type: ignore[arg-type]
        assert all(f"self.{name} =" in source for name in names), f"{module}: {owner} no longer sets {names}"


def test_every_adapter_is_listed_and_used() -> None:
    from django.conf import settings

    from config.celery import SQS_TRANSPORT

    assert settings.DATABASES["default"]["ENGINE"] in ("config.adapters.postgresql", "django.db.backends.sqlite3")
    assert SQS_TRANSPORT.split(":")[0] in ADAPTERS


def _pins() -> dict[str, str]:
    """requirements.txt's pins: distribution (lower case, without extras) → version."""
    from pathlib import Path

    pins = {}
    for line in (Path(__file__).resolve().parent.parent / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.split("[")[0].strip().lower()] = version.strip()
    return pins
