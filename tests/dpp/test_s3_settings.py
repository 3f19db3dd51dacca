"""The S3 results storage's client waits are bounded (README: AWS_S3_CONNECT_TIMEOUT, _READ_TIMEOUT, _MAX_ATTEMPTS).

botocore's defaults — 60 s to connect, 60 s to read, 5 attempts — let an S3 that accepts connections and never
answers hold a gunicorn thread for minutes; an outside audit measured 120 s per result fetch with a `max_attempts`
that botocore counts as retries, not attempts.
"""

from __future__ import annotations

import json

import pytest

from tests.processes import manage, process_env

PRINT_CONFIG = (
    "import json; from django.core.files.storage import storages; c = storages['results'].client_config; "
    "print(json.dumps([c.connect_timeout, c.read_timeout, c.retries, c.signature_version, c.s3]))"
)


def _client_config(**env: str) -> list[object]:
    settings = process_env(DPP_STORAGE="s3", AWS_STORAGE_BUCKET_NAME="b", **env)
    done = manage(["shell", "-c", PRINT_CONFIG], settings)
    loaded: list[object] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, [3, 10, {"total_max_attempts": 2, "mode": "standard"}]),
        (
            {"AWS_S3_CONNECT_TIMEOUT": "1", "AWS_S3_READ_TIMEOUT": "4", "AWS_S3_MAX_ATTEMPTS": "1"},
            [1, 4, {"total_max_attempts": 1, "mode": "standard"}],
        ),
    ],
)
def test_s3_waits_are_bounded_and_configurable(env: dict[str, str], expected: list[object]) -> None:
    connect, read, retries, signature, s3 = _client_config(**env)
    assert [connect, read, retries] == expected
    assert (signature, s3) == ("s3v4", {"addressing_style": "auto"})  # what django-storages no longer sets itself
