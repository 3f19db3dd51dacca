"""/readyz calls local result storage down on a full disk (issue 15, item 6).

Found from outside: with the results folder on a full filesystem, runs ended FINALIZE_ABORTED while /readyz said
`storage: up` (it only asked os.access() for permission). The folder here is a real 64 KiB tmpfs (the suite runs
as root, as CI does), filled to the last byte.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from django.conf import settings
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_results_folder(tmp_path: Path) -> Iterator[Path]:
    """The results storage on a tmpfs of its own, 64 KiB; unmounted afterwards."""
    folder = tmp_path / "results"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    configured = cast(dict[str, Any], settings.STORAGES["results"])
    tiny = {**configured, "OPTIONS": {**configured["OPTIONS"], "location": str(folder)}}
    try:
        with override_settings(STORAGES={**settings.STORAGES, "results": tiny}):
            yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _fill(folder: Path) -> Path:
    """Write to a file in `folder` until the filesystem refuses (ENOSPC); returns the file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"x" * 1024)
        except OSError as refused:
            assert refused.errno == errno.ENOSPC  # noqa: PT017 - the loop ends only by raising
    return filler


def _storage() -> tuple[int, str]:
    response = Client().get("/readyz")
    return response.status_code, response.json()["services"]["storage"]


def test_a_full_results_disk_is_storage_down_and_503(tiny_results_folder: Path) -> None:
    assert _storage() == (200, "up")
    filler = _fill(tiny_results_folder)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    assert response.json()["services"] == {"database": "up", "redis": "up", "broker": "up", "storage": "down"}
    assert response["Retry-After"] == "5"
    filler.unlink()  # space again: ready again, and the probes left nothing behind
    assert _storage() == (200, "up")
    assert list(tiny_results_folder.iterdir()) == []


def test_a_read_only_results_folder_is_storage_down(tiny_results_folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_results_folder)], check=True)
    assert _storage() == (503, "down")
