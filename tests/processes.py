"""Real processes for end-to-end tests: gunicorn, celery workers and beat, moto's server — all on 127.0.0.1.

Each starts in its own process group and is killed with its children at exit. They talk to the test database
that pytest-django created (tests using them need `django_db(transaction=True)` so that data is committed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """DATABASE_URL of the database this test process uses (pytest-django's test_… database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] or ""
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    host = db["HOST"] or "127.0.0.1"
    port = db["PORT"] or 5432
    return f"postgres://{auth}@{host}:{port}/{db['NAME']}"


def process_env(**overrides: str) -> dict[str, str]:
    """The environment of a child process: this test run's settings, plus overrides."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DPP_TASK_QUEUE": settings.DPP_TASK_QUEUE,
        "DPP_VAR_DIR": str(settings.VAR_DIR),
        "DPP_LOCAL_STORAGE_DIR": str(settings.DPP_LOCAL_STORAGE_DIR),
        "PYTHONUNBUFFERED": "1",
        "DPP_LOG_LEVEL": "info",
    }
    env.update(overrides)
    return env


def wait_until(check: object, timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s")


class Process:
    """A child process in its own session, with its output in a log file for failure reports."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a celery worker's pool children included)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)
        else:
            self.kill(signal.SIGKILL)  # leftover children of a dead leader
        self._log.close()


def _log_dir() -> Path:
    return Path(settings.VAR_DIR) / "process-logs"


def newest_log(name: str) -> str:
    """The log of the process called `name` started last (e.g. by `gunicorn()`, which yields only its URL)."""
    return max(_log_dir().glob(f"{name}-*.log"), key=lambda path: path.stat().st_mtime_ns).read_text(errors="replace")


GUNICORN_WORKER = "gthread"  # as in the Procfile, Dockerfile and compose file


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str] | None = None,
    *,
    workers: int = 2,
    threads: int = 4,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    """`gunicorn config.wsgi` on a free port; yields its base URL once /health answers."""
    port = free_port()
    args = [str(BIN / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    args += ["--threads", str(threads), "--worker-class", GUNICORN_WORKER, "--timeout", "60", "--graceful-timeout", "5"]
    args += list(extra_args)
    args += ["--no-control-socket"]  # as in the Procfile: gunicorns on one host would share ~/.gunicorn/gunicorn.ctl
    proc = Process("gunicorn", args, env or process_env(), _log_dir())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{base}/health", timeout=1).status_code == 200, 30, what="gunicorn up")
        yield base
    finally:
        proc.stop()


@contextlib.contextmanager
def _logged_start(proc: Process, ready: str, *, what: str) -> Iterator[Process]:
    """`proc` once its log shows `ready` (a RuntimeError with the log's end if it dies first); stopped on exit."""
    try:
        wait_until(lambda: ready in proc.log() or not proc.alive(), 60, what=f"{what} ready")
        if not proc.alive():
            raise RuntimeError(f"{what} died at start:\n{proc.log()[-3000:]}")
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def celery_worker(
    env: dict[str, str] | None = None,
    *,
    concurrency: int = 2,
    name: str = "worker",
    extra_args: tuple[str, ...] = (),
    app: str = "config",
    queues: tuple[str, ...] = (),
) -> Iterator[Process]:
    """`celery -A config worker` (prefork); yields once it is ready to consume. `extra_args`: e.g. a prefetch.
    `queues`: the queues to consume (default: the runs', the reaper's and the webhooks' of `env`; the Procfile
    gives each its own worker)."""
    worker_env = env or process_env()
    args = [str(BIN / "celery"), "-A", app, "worker", "--loglevel", "INFO", "--concurrency", str(concurrency)]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{name}-{free_port()}@%h"]
    queue = worker_env.get("DPP_TASK_QUEUE", "dpp-runs")
    webhooks = worker_env.get("DPP_WEBHOOK_QUEUE", f"{queue}-webhooks")
    consumed = queues or (queue, f"{queue}-reaper", webhooks)  # runs, reaper, webhooks (config.celery)
    args += ["-Q", ",".join(consumed), *extra_args]
    with _logged_start(Process(name, args, worker_env, _log_dir()), "ready", what="celery worker") as proc:
        yield proc


PROCFILE = ROOT / "Procfile"


def procfile_command(entry: str) -> str:
    """The command line of a Procfile entry (what `make run` starts through honcho)."""
    for line in PROCFILE.read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == entry:
            return command.strip()
    raise KeyError(f"no {entry!r} in the Procfile")


@contextlib.contextmanager
def procfile_process(entry: str, env: dict[str, str], *, ready: str) -> Iterator[Process]:
    """A Procfile entry run as honcho runs it (a shell command line, the venv's programs first on PATH);
    yields once its log shows `ready`."""
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    command = ["/bin/sh", "-c", f"exec {procfile_command(entry)}"]
    with _logged_start(Process(entry, command, env, _log_dir()), ready, what=f"Procfile {entry}") as proc:
        yield proc


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (a celery worker's pool processes)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's server (S3 + SQS stand-in) on 127.0.0.1; yields its endpoint URL."""
    port = free_port()
    proc = Process("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], dict(os.environ), _log_dir())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/moto-api/", timeout=1).status_code < 500, 30, what="moto up")
        yield url
    finally:
        proc.stop()


def moto_sqs_s3_env(endpoint: str, *, bucket: str, region: str) -> dict[str, str]:
    """Settings for SQS as the broker and S3 as the result storage, both on the moto server at `endpoint`."""
    return {
        "CELERY_BROKER_URL": f"sqs://dummy:dummy@127.0.0.1:{endpoint.rsplit(':', 1)[1]}",
        "DPP_SQS_IS_SECURE": "0",
        "DPP_SQS_REGION": region,
        "DPP_STORAGE": "s3",
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_S3_REGION_NAME": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "dummy",
        "AWS_SECRET_ACCESS_KEY": "dummy",  # moto accepts any credentials
    }


@contextlib.contextmanager
def celery_beat(env: dict[str, str] | None = None, *, name: str = "beat") -> Iterator[Process]:
    """`celery -A config beat` (the reaper's scheduler); yields once it has started ticking."""
    args = [str(BIN / "celery"), "-A", "config", "beat", "--loglevel", "INFO"]
    beat = Process(name, args, env or process_env(), _log_dir())
    with _logged_start(beat, "beat: Starting", what="celery beat") as proc:
        yield proc


def manage(
    args: list[str], env: dict[str, str], *, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`python manage.py <args>` in a child process with `env`; with `check`, raises with its output if it fails."""
    command = [sys.executable, "manage.py", *args]
    done = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done
