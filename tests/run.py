"""`make test`: find PostgreSQL and Redis, then run pytest against them.

Order, for each: the environment (DATABASE_URL / REDIS_URL), else localhost's standard port, else a throwaway
server started from local binaries (initdb + pg_ctl, redis-server) and stopped afterwards, else one clear
line saying what to install. pytest's own summary line is the last thing printed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = (
    "make test needs PostgreSQL 15+ and Redis: set DATABASE_URL and REDIS_URL, or run them on 127.0.0.1:5432 "
    "and :6379, or install their binaries (initdb/pg_ctl and redis-server; e.g. apt install postgresql redis-server)"
)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_accepts(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return True
    except Exception:
        return False


def _wait(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


class Services:
    def __init__(self) -> None:
        self.cleanups: list[Callable[[], None]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="dpp-test-services-"))
        self.postgres_fast_restart: Callable[[], None] | None = None  # set by a throwaway PostgreSQL

    def database_url(self) -> str | None:
        if os.environ.get("DATABASE_URL"):
            return os.environ["DATABASE_URL"]
        if _port_open(5432):
            for user in ("postgres", os.environ.get("USER") or "root"):
                url = f"postgres://{user}@127.0.0.1:5432/postgres"
                if _pg_accepts(url):
                    return url
        return self._throwaway_postgres()

    def _throwaway_postgres(self) -> str | None:
        initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
        if not (initdb and pg_ctl):
            return None
        data, port = self.tmp / "pg", _free_port()
        prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root: use an unprivileged account
            account = next((name for name in ("postgres", "nobody") if _user_exists(name)), None)
            if account is None:
                return None
            shutil.chown(self.tmp, user=account)
            prefix = ["runuser", "-u", account, "--"]

        def quiet(args: list[str], *, check: bool = True) -> None:
            subprocess.run(args, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        quiet([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"])
        options = f"-p {port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        control = [*prefix, pg_ctl, "-D", str(data), "-l", str(self.tmp / "pg.log")]
        quiet([*control, "-o", options, "-w", "start"])
        self.cleanups.append(lambda: quiet([*control, "-m", "immediate", "stop"], check=False))
        # `pg_ctl restart` reuses the options of the last start (postmaster.opts).
        self.postgres_fast_restart = lambda: quiet([*control, "-m", "fast", "-w", "restart"])
        url = f"postgres://postgres@127.0.0.1:{port}/postgres"
        return url if _wait(lambda: _pg_accepts(url), 30) else None

    def redis_url(self) -> str | None:
        if os.environ.get("REDIS_URL"):
            return os.environ["REDIS_URL"]
        if _port_open(6379):
            return "redis://127.0.0.1:6379/15"
        server = shutil.which("redis-server")
        if not server:
            return None
        port = _free_port()
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop_redis() -> None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)

        self.cleanups.append(stop_redis)
        return f"redis://127.0.0.1:{port}/0" if _wait(lambda: _port_open(port), 10) else None

    def stop(self) -> None:
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _browser_arguments() -> list[str]:
    """The browser tests need Debian's chromium and chromium-driver: without them they are left out of the run, and
    one line says so (never a skip that counts as a pass)."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers.chromium import chromium_found

    if chromium_found() is not None:
        return []
    print(
        "browser tests NOT RUN: chromium or chromedriver not found (apt-get install chromium chromium-driver)",
        file=sys.stderr,
    )
    return ["--ignore=tests/browser"]


def main(argv: list[str]) -> int:
    services = Services()
    try:
        database_url, redis_url = services.database_url(), services.redis_url()
        if not database_url or not redis_url:
            print(INSTALL_HINT, file=sys.stderr)
            return 2
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            # A real broker for the tasks the API publishes on commit; its own queue, purged by the suite.
            "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", redis_url),
            "DPP_TASK_QUEUE": os.environ.get("DPP_TASK_QUEUE", "dpp-test-runs"),
            "DPP_VAR_DIR": os.environ.get("DPP_VAR_DIR", str(services.tmp / "var")),
            "PYTHONUNBUFFERED": "1",
        }
        return subprocess.call([sys.executable, "-m", "pytest", *argv, *_browser_arguments()], cwd=ROOT, env=env)
    finally:
        services.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
