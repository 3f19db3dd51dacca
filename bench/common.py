"""What the benchmarks share: the PostgreSQL server they make throwaway databases on, and how they make them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Run as a script (`python bench/x.py`), Python puts this folder first on sys.path, and there `import mcp` (the SDK,
# imported by the project's URLconf) would find bench/mcp.py instead. Every bench imports this module before Django
# or the SDK, so the folder leaves the path here; as `python -m bench.x` it is not on the path and nothing changes.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
ROOT = _HERE.parent


def admin_url() -> str:
    """The maintenance database the benches connect to in order to create and drop their own databases."""
    return os.environ.get("BENCH_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def db_url(admin: str, name: str) -> str:
    """The URL of database `name` on the server of `admin`."""
    return admin.rsplit("/", 1)[0] + "/" + name


def recreate_database(
    admin: str, name: str, *, drop_only: bool = False, settings: dict[str, str] | None = None
) -> None:
    """Drop database `name` (closing its sessions) and, unless `drop_only`, create it empty, with `settings`
    (`ALTER DATABASE … SET`) applied to every session opened on it from then on."""
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if drop_only:
            return
        conn.execute(f"CREATE DATABASE {name}")
        for setting, value in (settings or {}).items():
            conn.execute(f"ALTER DATABASE {name} SET {setting} = {value}")


def migrated_database(name: str, **env: str) -> str:
    """Database `name` made empty and migrated by `manage.py migrate` in a child process (`env` on top of this
    process's environment); its URL."""
    admin = admin_url()
    recreate_database(admin, name)
    url = db_url(admin, name)
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v0"]
    subprocess.run(migrate, cwd=ROOT, env={**os.environ, **env, "DATABASE_URL": url}, check=True)
    return url


def setup_django(url: str) -> None:
    """Configure Django on database `url` with the project's settings."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


@contextlib.contextmanager
def django_database(name: str, *, keep: bool = False, reuse: bool = False) -> Iterator[None]:
    """Django set up on database `name`, made empty first (with `reuse`, a kept one as it is); its sessions closed
    after, and the database dropped unless `keep` or `reuse`."""
    admin = admin_url()
    if not reuse:
        recreate_database(admin, name)
    try:
        setup_django(db_url(admin, name))
        yield
    finally:
        from django.db import connections

        connections.close_all()
        if not (keep or reuse):
            recreate_database(admin, name, drop_only=True)


def server_version() -> str:
    """The version of the PostgreSQL server Django is connected to."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version')")
        (version,) = cursor.fetchone()
    return str(version)


def report(summary: dict[str, Any]) -> int:
    """Print `summary` as the one line of JSON a bench ends with; the exit status: 0 if it met its goals."""
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1
