"""Where DPP overrides a library's private internals: the only such places, each one earning its place by a figure
or a correctness bug with no public-API fix (docs/decisions.md, "Library overrides"; figures: docs/BENCHMARKS.md).

- `config.adapters.kombu_sqs`: kombu's SQS transport, whose polling loop survives a failed ReceiveMessage (a
  worker otherwise stops consuming for good after a short SQS outage). Selected for `sqs://` by `config.celery`.
- `config.adapters.postgresql`: Django's PostgreSQL backend, whose per-request health check reads the idle
  connection's socket instead of sending `SELECT 1` (server CPU per request −12 to −24 % in the A/B). The
  database ENGINE on PostgreSQL (`config.settings`).
- `config.adapters.django_hot`: the hot paths' statements on a server-binding psycopg cursor wrapped as Django's,
  prepared by PostgreSQL, and read into model instances without the ORM compiling them (server CPU per run poll
  −42 % in the A/B against `Model.objects.raw()`). Used by the apps' sql modules.

Each module names the upstream issue it stands in for and records, in `WRITTEN_AGAINST`, the pinned version of
the library and a hash of the source of every private piece it copies or relies on: tests/test_adapters.py fails
when either changes, so moving a pin means re-reading the adapter against the new code (or dropping it).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WrittenAgainst:
    """The library release an adapter was written against, and what of its internals it relies on."""

    distribution: str  # as pip names it
    version: str  # the pin in requirements.txt
    sources: dict[str, str] = field(default_factory=dict)  # dotted name → sha256 of inspect.getsource()
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # class → private attributes it reads


def resolve(dotted: str) -> object:
    """The object a dotted name stands for: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise ImportError(dotted)


def source_sha256(dotted: str) -> str:
    return hashlib.sha256(inspect.getsource(resolve(dotted)).encode()).hexdigest()  # type: ignore[arg-type]


ADAPTERS = ("config.adapters.django_hot", "config.adapters.kombu_sqs", "config.adapters.postgresql.base")
