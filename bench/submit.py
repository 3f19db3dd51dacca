"""Benchmark: POST /v1/runs and GET /v1/runs/{id} against a real gunicorn on PostgreSQL, beside pgbench.

    .venv/bin/python bench/submit.py [--seconds 10] [--workers 4] [--threads 8] [--tenants 1] [--keep] [--key-variant]
    .venv/bin/python bench/submit.py --ab OVERRIDE [--rounds 2] [--seconds 5]

With `--ab`, the levels below are replaced by an A/B of one library override (docs/decisions.md, "Library
overrides"): `--rounds` times, first with the override and then with the library's stock behaviour
(bench/ab_stock.py), a fresh gunicorn each side, submits at c=8 and c=32 and GETs at c=8 for `--seconds` each;
then the figures of each side and the ratios stock / override. No pgbench.

What it does:
1. creates a fresh PostgreSQL database `dpp_bench` (server of BENCH_ADMIN_URL, default
   postgres://postgres@127.0.0.1:5432/postgres), migrates it, and onboards `--tenants` tenants (default 1) on plan
   `unlimited` with 1,000,000 USD each and an API key. No worker runs, so every accepted run stays QUEUED: the
   plan's cap of 1,000 open runs is lifted in this database only, and the queued runs are canceled (a full release,
   through runs.services.run_cancel) between load levels, followed by VACUUM ANALYZE of the tables that touched,
   so each level (the reads too) starts with an empty queue and no dead rows left for autovacuum;
2. starts `gunicorn config.wsgi --workers W --threads T` on it, with Redis rate limiting on (BENCH_REDIS_URL,
   default redis://127.0.0.1:6379/14) and tasks published to the Redis broker on a queue of its own (`dpp-bench`,
   purged at the end);
3. for `--seconds` at each concurrency 1, 8, 32, 256: that many client threads, each with its own keep-alive
   connection (http.client), POST /v1/runs as fast as they get answers (a new Idempotency-Key each time; the
   diagnostic pack, reservation 0.0100); then GET /v1/runs/{id} at concurrency 8 on the runs just created.
   Figures per level: answered requests per second, 202s per second, p50/p99 latency, statuses, and connection
   errors or timeouts (an unanswered request);
4. stops gunicorn and runs pgbench's TPC-B-like test on the same server: `pgbench -i -s 10` into its own
   database (`dpp_bench_pgbench`), then `pgbench -c 8 -j 2 -T 20`;
5. prints the figures, the ratio submit TPS at c=32 / pgbench TPS, and ends with ONE line of JSON;
   besides wall-clock figures, each level reports the CPU milliseconds per answered request spent by gunicorn
   (master and workers), by the PostgreSQL backends of `dpp_bench` (from /proc) and by the client itself: a cost
   that moves little when other processes load the machine, from which the capacity of an idle machine can be
   estimated (`cpu_bound_rps`: cores × 1000 / server CPU ms per request);
6. drops both databases and its temporary directory (unless --keep: then gunicorn's log stays there).
With --key-variant, after the reads: c=32 again, alternating plain submits and submits through an agent key with a
spend limit (day) below a parent with one (month) — every submit moves two spend counters (SPEC §8) —
`--key-rounds` pairs, and the median ratio of their ok/s (target ≥ 0.85).

Client and server share the machine: on 2 cores the Python client threads take a good part of one core.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402

DB_NAME = os.environ.get("BENCH_DB_NAME", "dpp_bench")  # another name for benchmarks side by side
PGBENCH_DB = "dpp_bench_pgbench"
QUEUE = "dpp-bench"
LEVELS = (1, 8, 32, 256)
READ_CONCURRENCY = 8
CREDIT_MICROS = 1_000_000 * 1_000_000
SUBMIT_BODY = json.dumps(
    {
        "pack_type": "diagnostic",
        "inputs": {"sleep_ms": 0, "cost_usd": "0.0010", "outcome": "succeed"},
        "reservation": {"max_cost_usd": "0.0100", "timebox_sec": 30},
    }
).encode()
TARGETS = {"submit_vs_pgbench": 0.07, "p99_c8_ms": 40.0, "get_c8_rps": 600.0}


def _setup_django(url: str, redis_url: str, var_dir: str) -> None:
    os.environ.update(
        {
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "DPP_TASK_QUEUE": QUEUE,
            "DPP_VAR_DIR": var_dir,
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
    )
    import django

    django.setup()


@dataclass
class Agent:
    tenant_id: str
    api_key: str
    limited_key: str = ""  # a key two levels down, each level with a spend limit (SPEC §8): --key-variant


def _prepare(tenants: int) -> list[Agent]:
    """Migrate, lift the open-run cap of plan unlimited (no worker drains the queue), onboard the tenants."""
    from django.core.management import call_command

    from billing.models import Plan
    from billing.services import ledger_topup, tenant_onboard
    from dpp.services import KeyLimits, api_key_issue

    call_command("migrate", verbosity=0)
    Plan.objects.filter(code="unlimited").update(max_concurrent_runs=1_000_000_000)
    agents = []
    for number in range(tenants):
        tenant = tenant_onboard(tenant_id=f"bench-{number:04d}", plan_code="unlimited", actor="bench")
        ledger_topup(tenant=tenant, amount_micros=CREDIT_MICROS, actor="bench", reason="bench credit")
        root = api_key_issue(tenant=tenant, label="bench", can_manage_keys=True)
        # Limits far above what a run of the bench spends: every submit counts in two windows and is never refused.
        month = KeyLimits(spend_limit_micros=CREDIT_MICROS, spend_window="month")
        parent = api_key_issue(tenant=tenant, parent=root.api_key, limits=month, can_manage_keys=True)
        day = KeyLimits(spend_limit_micros=CREDIT_MICROS // 2, spend_window="day")
        limited = api_key_issue(tenant=tenant, parent=parent.api_key, limits=day)
        agents.append(Agent(tenant.pk, root.secret, limited.secret))
    return agents


def _drain_queue() -> int:
    """Cancel every QUEUED run (full release): the next level starts with an empty queue."""
    from django.db import close_old_connections

    from dpp.models import Tenant
    from runs import services
    from runs.models import Run

    close_old_connections()
    tenants = {tenant.pk: tenant for tenant in Tenant.objects.all()}
    canceled = 0
    for run_id, tenant_id in Run.objects.filter(status="QUEUED").values_list("pk", "tenant_id").iterator():
        services.run_cancel(tenant=tenants[tenant_id], run_id=run_id)
        canceled += 1
    return canceled


def _quiesce() -> None:
    """Cancel the queued runs, then VACUUM ANALYZE what that touched, so the next level starts from the same state.

    Canceling a level's thousands of runs at once leaves as many dead rows, which autovacuum would otherwise clean
    up during the next level, on the same two cores (a burst a real queue drained by workers spreads out)."""
    from django.db import connection

    _drain_queue()
    with connection.cursor() as cursor:
        tables = "runs_run, billing_account, billing_keyspend, billing_ledgertransaction, billing_ledgerentry"
        cursor.execute(f"VACUUM (ANALYZE) {tables}")
    connection.close()


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gunicorn_pids(port: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"config.wsgi" in cmdline and f"127.0.0.1:{port}".encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def _backend_pids(admin_url: str) -> list[int]:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (DB_NAME,)).fetchall()
    return [pid for (pid,) in rows]


class CpuMeter:
    """CPU seconds spent by gunicorn and by the bench database's backends between start() and stop()."""

    def __init__(self, admin_url: str, port: int) -> None:
        self.admin_url, self.port = admin_url, port
        self.before: dict[str, dict[int, float]] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        own = os.times()
        return {
            "gunicorn": {pid: _cpu_seconds(pid) for pid in _gunicorn_pids(self.port)},
            "postgres": {pid: _cpu_seconds(pid) for pid in _backend_pids(self.admin_url)},
            "client": {os.getpid(): own.user + own.system},
        }

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        return {kind: sum(cpu - self.before[kind].get(pid, 0.0) for pid, cpu in after[kind].items()) for kind in after}


@dataclass
class Level:
    name: str
    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    run_ids: list[tuple[int, str]] = field(default_factory=list)  # (client thread, run id)
    cpu: dict[str, float] = field(default_factory=dict)

    def cpu_ms_per_request(self, answered: int) -> dict[str, float]:
        return {kind: round(seconds * 1000 / max(answered, 1), 2) for kind, seconds in self.cpu.items()}

    def server_cpu_ms(self, answered: int) -> float:
        per_request = self.cpu_ms_per_request(answered)
        return per_request.get("gunicorn", 0.0) + per_request.get("postgres", 0.0)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    def summary(self) -> dict[str, Any]:
        answered = sum(self.statuses.values())
        return {
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 2),
            "requests": answered,
            "rps": round(answered / self.seconds, 1),
            "ok_rps": round((self.statuses[202] + self.statuses[200]) / self.seconds, 1),
            "p50_ms": round(self.percentile(0.50), 2),
            "p99_ms": round(self.percentile(0.99), 2),
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "unanswered": sum(self.errors.values()),
            "errors": dict(self.errors),
            "cpu_ms_per_request": self.cpu_ms_per_request(answered),
            # What the CPU cost allows on this machine's cores if nothing else ran (client excluded).
            "cpu_bound_rps": round(
                (os.cpu_count() or 1) * 1000 / max(sum(self.cpu_ms_per_request(answered).values()), 0.01), 1
            ),
        }


class Client:
    """One keep-alive connection; a request that gets no answer is counted, and the connection is renewed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            raise


def _run_level(level: Level, base_url: str, seconds: float, make_request: Any, meter: CpuMeter | None = None) -> None:
    """`level.concurrency` threads, each sending `make_request(thread, i)` back to back for `seconds`."""
    split = urlsplit(base_url)
    lock = threading.Lock()
    start_barrier = threading.Barrier(level.concurrency + 1)
    stop_at: list[float] = []

    def client_thread(number: int) -> None:
        client = Client(split.hostname or "127.0.0.1", split.port or 80)
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        run_ids: list[tuple[int, str]] = []
        start_barrier.wait()
        i = 0
        while time.perf_counter() < stop_at[0]:
            method, path, body, headers = make_request(number, i)
            i += 1
            began = time.perf_counter()
            try:
                status, content = client.request(method, path, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - began)
            statuses[status] += 1
            if status == 202:
                run_ids.append((number, json.loads(content)["run_id"]))
        client.conn.close()
        with lock:
            level.latencies += latencies
            level.statuses.update(statuses)
            level.errors.update(errors)
            level.run_ids += run_ids

    threads = [threading.Thread(target=client_thread, args=(n,), daemon=True) for n in range(level.concurrency)]
    for thread in threads:
        thread.start()
    if meter is not None:
        meter.start()
    began = time.perf_counter()
    stop_at.append(began + seconds)
    start_barrier.wait()
    for thread in threads:
        thread.join()
    level.seconds = time.perf_counter() - began
    if meter is not None:
        level.cpu = meter.stop()


def _submit_requests(agents: list[Agent], tag: str, *, limited: bool = False) -> Any:
    salt = uuid.uuid4().hex[:8]

    def make(number: int, i: int) -> tuple[str, str, bytes, dict[str, str]]:
        agent = agents[number % len(agents)]
        headers = {
            "Authorization": f"Bearer {agent.limited_key if limited else agent.api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": f"{tag}-{salt}-{number}-{i}",
        }
        return "POST", "/v1/runs", SUBMIT_BODY, headers

    return make


def _read_requests(agents: list[Agent], run_ids: list[tuple[int, str]]) -> Any:
    """GET /v1/runs/{id} of runs made at the earlier levels, each with its owner's key (client thread n used
    agents[n % len(agents)])."""
    ids = run_ids or [(0, str(uuid.uuid4()))]

    def make(number: int, i: int) -> tuple[str, str, None, dict[str, str]]:
        submitter, run_id = ids[(number * 7919 + i) % len(ids)]
        owner = agents[submitter % len(agents)]
        return "GET", f"/v1/runs/{run_id}", None, {"Authorization": f"Bearer {owner.api_key}"}

    return make


def _pgbench(admin_url: str, clients: int = 8, jobs: int = 2, seconds: int = 20) -> float:
    """TPC-B-like tps (without initial connection time) of `pgbench -c 8 -j 2 -T 20` on scale 10."""
    parts = urlsplit(common.db_url(admin_url, PGBENCH_DB))
    base = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432), "-U", parts.username or "postgres"]
    env = {**os.environ, **({"PGPASSWORD": parts.password} if parts.password else {})}
    common.recreate_database(admin_url, PGBENCH_DB)
    try:
        subprocess.run(["pgbench", *base, "-i", "-s", "10", "-q", PGBENCH_DB], check=True, env=env, capture_output=True)
        done = subprocess.run(
            ["pgbench", *base, "-c", str(clients), "-j", str(jobs), "-T", str(seconds), PGBENCH_DB],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        common.recreate_database(admin_url, PGBENCH_DB, drop_only=True)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if match is None:
        raise RuntimeError(f"no tps in pgbench's output:\n{done.stdout}")
    return float(match.group(1))


def _purge_queue(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).delete(QUEUE)


def _print_level(level: Level) -> None:
    s = level.summary()
    print(
        f"{level.name:>6} c={s['concurrency']:<3} {s['requests']:>6} answered in {s['seconds']:>5.1f} s: "
        f"{s['rps']:>7.1f} req/s, {s['ok_rps']:>7.1f} ok/s, p50 {s['p50_ms']:>7.2f} ms, p99 {s['p99_ms']:>8.2f} ms, "
        f"statuses {s['statuses']}, unanswered {s['unanswered']} {s['errors'] or ''}; CPU ms/request "
        + ", ".join(f"{kind} {ms:.2f}" for kind, ms in s["cpu_ms_per_request"].items())
        + f" (server CPU-bound at {s['cpu_bound_rps']:.0f}/s on {os.cpu_count()} idle cores)"
    )


AB_OVERRIDES = ("postgresql_backend", "hot")
AB_FIGURES = (("submit", 8), ("submit", 32), ("get", 8))


def _ab_side(args: Any, admin_url: str, env: dict[str, str], agents: list[Agent], stock: bool) -> dict[str, Any]:
    """One side of an A/B: a fresh gunicorn, warmed up, then each of AB_FIGURES' levels from a quiet database."""
    from tests.processes import gunicorn

    side_env = {**env, "DPP_BENCH_STOCK": args.ab if stock else ""}
    config = ("-c", str(ROOT / "bench" / "ab_stock.py"))
    figures: dict[str, Any] = {}
    with gunicorn(side_env, workers=args.workers, threads=args.threads, extra_args=config) as url:
        meter = CpuMeter(admin_url, urlsplit(url).port or 0)
        _run_level(Level("warmup", 8), url, 2.0, _submit_requests(agents, "warm"))
        _quiesce()
        made: list[tuple[int, str]] = []
        for name, concurrency in AB_FIGURES:
            level = Level(name, concurrency)
            if name == "submit":
                _run_level(level, url, args.seconds, _submit_requests(agents, f"ab{concurrency}"), meter)
                made += level.run_ids
            else:
                _run_level(level, url, args.seconds, _read_requests(agents, made), meter)
            _print_level(level)
            summary = level.summary()
            summary["server_cpu_ms"] = round(level.server_cpu_ms(sum(level.statuses.values())), 2)
            figures[f"{name}_c{concurrency}"] = summary
            _quiesce()
    return figures


def _ab(args: Any, admin_url: str, env: dict[str, str], agents: list[Agent]) -> int:
    """Override and stock alternately, `--rounds` times; per figure the median of each side and stock / override."""
    sides: dict[str, list[dict[str, Any]]] = {"override": [], "stock": []}
    for number in range(args.rounds):
        for side, runs in sides.items():
            print(f"round {number + 1}, {side} ({args.ab}); load average {os.getloadavg()[0]:.1f}")
            runs.append(_ab_side(args, admin_url, env, agents, side == "stock"))
    result: dict[str, Any] = {"bench": "submit-ab", "override": args.ab, "rounds": args.rounds, "figures": {}}
    for key in sides["override"][0]:
        row = {}
        for metric in ("ok_rps", "p50_ms", "p99_ms", "server_cpu_ms"):
            medians = {side: statistics.median(run[key][metric] for run in runs) for side, runs in sides.items()}
            ratio = medians["stock"] / medians["override"] if medians["override"] else 0.0
            row[metric] = {**medians, "stock_over_override": round(ratio, 3)}
            print(f"{key:>10} {metric:>13}: override {medians['override']:>8.2f}, stock {medians['stock']:>8.2f}, "
                  f"stock/override {ratio:.3f}")  # fmt: skip
        result["figures"][key] = row
    result["per_round"] = sides
    result["cpus"], result["load_average"] = os.cpu_count(), round(os.getloadavg()[0], 1)
    print(json.dumps(result, separators=(",", ":")))
    return 0


def _key_variant(agents: list[Agent], base_url: str, seconds: float, meter: CpuMeter, rounds: int) -> dict[str, Any]:
    """Submits at c=32 plain and through the limited keys, alternating (plain, keyed) `rounds` times so that the
    machine's drifting load weighs on both alike: the median of the rounds' keyed/plain ok/s, and the server CPU
    per request of each (steadier on a shared machine)."""
    ok: dict[str, list[float]] = {"plain": [], "keyed": []}
    cpu: dict[str, list[float]] = {"plain": [], "keyed": []}
    for round_number in range(rounds):
        for name in ("plain", "keyed"):
            level = Level(name, 32)
            make = _submit_requests(agents, f"{name}{round_number}", limited=name == "keyed")
            _run_level(level, base_url, seconds, make, meter)
            _print_level(level)
            summary = level.summary()
            ok[name].append(summary["ok_rps"])
            cpu[name].append(summary["cpu_ms_per_request"]["gunicorn"] + summary["cpu_ms_per_request"]["postgres"])
            _quiesce()
    ratio = statistics.median(k / p for k, p in zip(ok["keyed"], ok["plain"], strict=True) if p)
    cpu_plain, cpu_keyed = (sum(cpu[name]) / rounds for name in ("plain", "keyed"))
    print(
        f"c=32 through limited keys / plain, median of {rounds} rounds: {ratio:.3f} (target ≥ 0.85); server CPU"
        f" per request {cpu_keyed:.2f} / {cpu_plain:.2f} ms"
    )
    return {"plain_ok_rps": ok["plain"], "keyed_ok_rps": ok["keyed"], "median_ratio": round(ratio, 3),
            "server_cpu_ms": {"plain": round(cpu_plain, 2), "keyed": round(cpu_keyed, 2)}}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load level")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn --workers (one per core measured best)")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn --threads")
    parser.add_argument("--tenants", type=int, default=1, help="tenants the client threads take turns with")
    parser.add_argument("--pgbench-seconds", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help=f"keep the database {DB_NAME}")
    parser.add_argument("--ab", choices=[*AB_OVERRIDES], help="A/B one library override against the stock library")
    parser.add_argument("--rounds", type=int, default=2, help="with --ab: override, stock, override, stock…")
    parser.add_argument(
        "--key-variant",
        action="store_true",
        help="then c=32 alternating plain submits and submits through a key with a spend limit below a limited parent",
    )
    parser.add_argument("--key-rounds", type=int, default=5, help="(plain, keyed) pairs of --key-variant")
    args = parser.parse_args()

    admin_url = common.admin_url()
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    var_dir = tempfile.mkdtemp(prefix="dpp-bench-submit-")
    common.recreate_database(admin_url, DB_NAME)
    load_before = os.getloadavg()[0]
    try:
        _setup_django(common.db_url(admin_url, DB_NAME), redis_url, var_dir)
        from django.db import connection

        from tests.processes import gunicorn

        agents = _prepare(args.tenants)
        connection.close()
        # Connections kept for the whole run: the CPU meter reads the backends' own counters, which a backend
        # recycled after the default 60 s would take with it in the middle of a level.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DPP_DB_CONN_MAX_AGE": "3600"}
        if args.ab:
            return _ab(args, admin_url, env, agents)
        levels: list[Level] = []
        print(f"gunicorn --workers {args.workers} --threads {args.threads}; {args.tenants} tenant(s); "
              f"{args.seconds:.0f} s per level; {os.cpu_count()} CPUs; load average {load_before:.1f}")  # fmt: skip
        with gunicorn(env, workers=args.workers, threads=args.threads) as base_url:
            meter = CpuMeter(admin_url, urlsplit(base_url).port or 0)
            warm = Level("warmup", 8)
            _run_level(warm, base_url, 2.0, _submit_requests(agents, "warm"))
            _quiesce()
            for concurrency in LEVELS:
                level = Level("submit", concurrency)
                _run_level(level, base_url, args.seconds, _submit_requests(agents, f"c{concurrency}"), meter)
                _print_level(level)
                levels.append(level)
                # Also before the reads: right after c=256, autovacuum works on its rows and gunicorn still reaps
                # 256 idle keep-alive connections, which measured up to 40 % less GETs/s than a settled server.
                _quiesce()
            reads = Level("get", READ_CONCURRENCY)
            read_ids = levels[1].run_ids + levels[2].run_ids
            _run_level(reads, base_url, args.seconds, _read_requests(agents, read_ids), meter)
            _print_level(reads)
            keyed = _key_variant(agents, base_url, args.seconds, meter, args.key_rounds) if args.key_variant else None
        load_after = os.getloadavg()[0]
        pgbench_tps = _pgbench(admin_url, seconds=args.pgbench_seconds)
        by_concurrency = {level.concurrency: level.summary() for level in levels}
        submit_c32 = by_concurrency[32]["ok_rps"]
        ratio = submit_c32 / pgbench_tps if pgbench_tps else 0.0
        read = reads.summary()
        checks = {
            "submit_c32_vs_pgbench": ratio >= TARGETS["submit_vs_pgbench"],
            "p99_c8": by_concurrency[8]["p99_ms"] <= TARGETS["p99_c8_ms"],
            "get_c8": read["ok_rps"] >= TARGETS["get_c8_rps"],
            "c256_all_answered": by_concurrency[256]["unanswered"] == 0,
        }
        print(f"pgbench -c 8 -j 2 -T {args.pgbench_seconds} (scale 10): {pgbench_tps:.1f} tps")
        print(f"submit TPS at c=32 / pgbench TPS = {submit_c32:.1f} / {pgbench_tps:.1f} = {ratio:.3f} (target ≥ 0.07)")
        print(f"targets: {checks}; load average {load_before:.1f} before, {load_after:.1f} after the HTTP levels")
        result = {
            "bench": "submit",
            "gunicorn": {"workers": args.workers, "threads": args.threads},
            "tenants": args.tenants,
            "submit": {str(c): s for c, s in by_concurrency.items()},
            "get_run": read,
            "pgbench_tps": round(pgbench_tps, 1),
            "submit_c32_over_pgbench": round(ratio, 3),
            "targets_met": checks,
            "load_average": [round(load_before, 1), round(load_after, 1)],
            "cpus": os.cpu_count(),
            "key_variant_c32": keyed,
        }
        print(json.dumps(result, separators=(",", ":")))
        return 0
    finally:
        _purge_queue(redis_url)
        if not args.keep:
            shutil.rmtree(var_dir, ignore_errors=True)  # gunicorn's log and the result envelopes (none: no worker)
            from django.db import connections

            connections.close_all()
            common.recreate_database(admin_url, DB_NAME, drop_only=True)


if __name__ == "__main__":
    sys.exit(main())
