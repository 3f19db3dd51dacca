"""Result envelopes in storage (SPEC §3.2 step 5): local files or S3, the same code.

The key is derived from the run and its finalize token (`results/<tenant>/<run>/<finalize_token>.json`), so a
retried or rolled-forward finalize always names the same object. The run's `result_sha256` is the SHA-256 of
the envelope's bytes exactly as stored and served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.http import HttpResponse

from dpp.http.errors import DependencyUnavailableError
from dpp.storage import bucket_exists
from runs.models import Run

logger = logging.getLogger("dpp.runs.results")


def results_storage() -> Storage:
    return storages["results"]


def envelope_key(run: Run, finalize_token: uuid.UUID) -> str:
    return f"results/{run.tenant_id}/{run.pk}/{finalize_token}.json"


def envelope_bytes(
    *, run: Run, finalize_token: uuid.UUID, data: dict[str, Any], cost_micros: int, finished_at: datetime
) -> bytes:
    envelope = {
        "run_id": str(run.pk),
        "finalize_token": str(finalize_token),
        "pack_type": run.pack_type,
        "profile_version": run.profile_version,
        "actual_cost_usd_micros": cost_micros,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": finished_at.isoformat(),
        "trace_id": run.trace_id,
        "data": data,
    }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Envelope:
    key: str
    sha256: str
    size: int
    cost_micros: int


# A local results folder's mark: written by the processes that store envelopes (a worker when it starts, and
# before each save), never by one that only reads them. A folder without it is not where the workers put the
# envelopes (a shell whose DPP_LOCAL_STORAGE_DIR differs from theirs; an unmounted volume), and a file missing
# there says nothing about a run. S3's counterpart is the bucket check (dpp.storage).
LOCAL_MARK = ".dpp-results"


def results_folder_mark() -> None:
    """Mark the local results folder as the one envelopes are stored in (creating it). Nothing to do on S3."""
    storage = results_storage()
    if isinstance(storage, FileSystemStorage):
        mark = Path(storage.location) / LOCAL_MARK
        if not mark.exists():
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.write_text("DPP result envelopes are stored in this folder.\n")


def envelope_store(*, key: str, content: bytes, cost_micros: int) -> Envelope:
    """Write the envelope at exactly `key`, overwriting a partial earlier attempt (both storages are configured
    to overwrite: no existence check, which on S3 would be one more request per run)."""
    results_folder_mark()  # one stat() when the mark is there
    saved = results_storage().save(key, ContentFile(content))
    if saved != key:
        raise RuntimeError(f"storage saved the envelope as {saved!r} instead of {key!r}")
    return Envelope(key=key, sha256=hashlib.sha256(content).hexdigest(), size=len(content), cost_micros=cost_micros)


STORAGE = "result storage"


def envelope_read(key: str) -> bytes | None:
    """The object's bytes; None only when the storage says there is no such object (a missing file; S3's 404,
    which django-storages raises as FileNotFoundError). Any other failure — a directory that cannot be read, a
    transport error, S3 refusing or failing — says nothing about the envelope: DependencyUnavailableError, so that
    neither the reaper rolls back a run whose valid result it merely could not read, nor the API calls a result
    that is still there "expired"."""
    storage = results_storage()
    try:
        with storage.open(key, "rb") as handle:
            content: bytes = handle.read()
    except FileNotFoundError:
        _confirm_absent(storage, key)
        return None
    except Exception as exc:
        raise _unavailable("read envelope", key, exc) from exc
    return content


def _unavailable(doing: str, key: str, exc: Exception) -> DependencyUnavailableError:
    """The error to raise when the storage failed to answer (logged here with the cause's stack)."""
    logger.error("could not %s %s: %s", doing, key, type(exc).__name__, exc_info=exc)
    return DependencyUnavailableError(STORAGE)


def _confirm_absent(storage: Storage, key: str) -> None:
    """A "no such object" answer holds only where the envelopes are: on S3 if the bucket itself is there
    (dpp.storage; a bucket that does not exist is a misconfiguration or an outage, not a missing envelope), in a
    local folder if it bears the workers' mark (LOCAL_MARK)."""
    if isinstance(storage, FileSystemStorage):
        if not (Path(storage.location) / LOCAL_MARK).exists():
            logger.error(
                "the results folder %s has no %s: no worker stores envelopes there (is DPP_LOCAL_STORAGE_DIR the"
                " workers'?); %s not taken as absent",
                storage.location,
                LOCAL_MARK,
                key,
            )
            raise DependencyUnavailableError(STORAGE)
        return
    try:
        present = bucket_exists(storage)
    except Exception as exc:
        raise _unavailable("check the results bucket for", key, exc) from exc
    if not present:
        logger.error("the results bucket does not exist (looking for %s)", key)
        raise DependencyUnavailableError(STORAGE)


def envelope_stored(key: str) -> bool:
    """Whether the object is in storage, without reading it (S3: one HEAD). DependencyUnavailableError when the
    storage cannot tell."""
    storage = results_storage()
    try:
        if storage.exists(key):
            return True
    except Exception as exc:
        raise _unavailable("look up envelope", key, exc) from exc
    _confirm_absent(storage, key)
    return False


def envelope_validate(*, run: Run, key: str) -> Envelope | None:
    """The stored envelope of a claimed run, if present and valid for this run and finalize token; None if it is
    absent or invalid. Raises DependencyUnavailableError when the storage cannot tell (see envelope_read)."""
    content = envelope_read(key)
    if content is None:
        return None
    try:
        envelope = json.loads(content)
    except ValueError:
        return None
    if not isinstance(envelope, dict):
        return None
    cost = envelope.get("actual_cost_usd_micros")
    if (
        envelope.get("run_id") != str(run.pk)
        or envelope.get("finalize_token") != str(run.finalize_token)
        or isinstance(cost, bool)
        or not isinstance(cost, int)
        or cost < 0
        or cost % 100
        or "data" not in envelope
    ):
        return None
    return Envelope(key=key, sha256=hashlib.sha256(content).hexdigest(), size=len(content), cost_micros=cost)


def result_expires_at(run: Run) -> datetime | None:
    if run.completed_at is None:
        return None
    return run.completed_at + timedelta(days=settings.DPP_RESULT_RETENTION_DAYS)


def is_local_storage() -> bool:
    return isinstance(results_storage(), FileSystemStorage)


def signed_url(key: str) -> str:
    """A time-limited URL of the object (S3: a presigned GET)."""
    return str(results_storage().url(key))


def result_response(run: Run) -> HttpResponse | None:
    """The run's stored envelope as an answer: a redirect to a signed URL (S3), or the bytes themselves (local
    storage), with the sha256 as ETag. None when the object is no longer in storage; DependencyUnavailableError when
    the storage cannot be read."""
    assert run.result_key  # noqa: S101 - callers answer for runs without a result
    if not is_local_storage():
        # A signed URL is made without asking S3: look first, so that a result that is gone is a 410 and an S3
        # that cannot answer a 503, not a redirect to an error (one HEAD per result fetch; polls never do it).
        if not envelope_stored(run.result_key):
            return None
        response = HttpResponse(status=302)
        response["Location"] = signed_url(run.result_key)
        return response
    content = envelope_read(run.result_key)
    if content is None:
        return None
    response = HttpResponse(content, content_type="application/json")
    response["ETag"] = f'"{run.result_sha256}"'
    response["X-DPP-Result-SHA256"] = run.result_sha256
    return response
