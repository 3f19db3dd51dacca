"""The embedded broker (kombu's filesystem transport) says nothing misleading: a process that connects and publishes
logs no "No hostname was supplied" (it did, at every connection: the bare `filesystem://` names no host)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.celery import broker_url
from tests.processes import process_env

# A child process in the embedded mode's broker: it connects as the API and the workers do, and publishes a run.
PUBLISH = """
import django
django.setup()
from config.celery import app
with app.connection_for_write() as conn:
    conn.ensure_connection(max_retries=1)
app.send_task("dpp.runs.execute", args=["00000000-0000-0000-0000-000000000000"], queue="h-kombu-fs")
print("published", app.conf.broker_write_url, app.conf.broker_read_url)
"""


def _publish(tmp_path: Path, url: str | None) -> subprocess.CompletedProcess[str]:
    env = process_env(DPP_BROKER_DIR=str(tmp_path / "broker"), DPP_LOG_LEVEL="debug")
    env.pop("CELERY_BROKER_URL")
    if url is not None:
        env["CELERY_BROKER_URL"] = url
    return subprocess.run(
        [sys.executable, "-c", PUBLISH], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_bare_filesystem_url_gets_a_host_and_others_are_untouched() -> None:
    assert broker_url("filesystem://") == "filesystem://localhost/"
    assert broker_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert broker_url("sqs://") == "sqs://"


@pytest.mark.parametrize("url", [None, "filesystem://"])  # make run's default, and the same said in the environment
def test_connecting_and_publishing_on_the_embedded_broker_logs_no_hostname_warning(
    tmp_path: Path, url: str | None
) -> None:
    done = _publish(tmp_path, url)
    assert done.returncode == 0, done.stderr
    assert "published filesystem://localhost/ filesystem://localhost/" in done.stdout
    assert "No hostname was supplied" not in done.stderr
    assert len(list((tmp_path / "broker" / "queue").iterdir())) == 1  # the message really went to the folder
