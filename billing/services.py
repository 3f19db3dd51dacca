"""Every write of money. Each movement is a balanced transaction posted together with the conditional UPDATE
of the balances it moves, inside the caller's database transaction.

Lock order, to keep PostgreSQL free of deadlocks, the same in every transaction that moves money: the spend
counters of the submitting key's chain first (KeySpend, root key first, then down to the submitting key), then the
account rows of the movement: the tenant's and the platform shard it posts to, in one UPDATE that locks them in key
order (billing.sql.balances_move). A platform row is one of its kind's 16 shards (SPEC §12), picked by the run id or
the tenant: the balances move last in their transaction, so that it is held briefly.
`ledger_reserve` and `ledger_settle` run inside a run service's transaction (the run's state change and its
money commit together); `ledger_topup`, `ledger_adjust`, `ledger_manual_post` (what a person posts: the admin,
the `topup` command) and `tenant_onboard` are top-level and durable.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing import sql
from billing.low_balance import low_balance_watch
from billing.models import Account, LedgerEntry, LedgerTransaction, Plan, TenantPlan
from billing.selectors import key_spend_spent
from config.adapters.django_hot import hot_cursor
from dpp.http.errors import ApplicationError
from dpp.key_limits import KeyNode, limited_nodes, nearest, over_limit, resets_at, window_bounds
from dpp.models import Tenant
from dpp.money import GRANULE_MICROS, MICROS_PER_USD, format_usd, parse_usd
from dpp.services import tenant_create

Kind = LedgerTransaction.Kind
AccountKind = Account.Kind


class LedgerInvariantError(RuntimeError):
    """A movement would break an invariant that cannot be the client's fault (e.g. held going negative)."""


class ReservationRacedError(RuntimeError):
    """A reservation refused on rows a concurrent commit has since changed: neither refusal holds any more.

    The balance UPDATE judges the tenant's rows as they were when the statement began; if a top-up or a settle
    commits while the statement waits for their lock, the guard may still refuse on the old balance (PostgreSQL
    re-checks the new row version only for rows the old one let through). The caller rolls back and tries again.
    """


class SubmittedRun(Protocol):
    """What key_spend_release needs of a run (billing does not import runs)."""

    api_key_id: int | None
    created_at: datetime


def _require_transaction() -> None:
    if not connection.in_atomic_block:
        raise RuntimeError("money must move inside the database transaction of its state change")


def _check_amount(micros: int, *, allow_zero: bool = False) -> None:
    if not isinstance(micros, int) or isinstance(micros, bool):
        raise TypeError("money is int micros")
    if micros % GRANULE_MICROS or micros < 0 or (micros == 0 and not allow_zero):
        raise ValueError(f"{micros} is not a positive multiple of {GRANULE_MICROS} micros")


def _move_balances(
    tenant_id: str,
    deltas: Mapping[str, int],
    *,
    open_delta: int = 0,
    max_open: int | None = None,
    platform: tuple[str, int] | None = None,
) -> bool:
    """One conditional UPDATE of the tenant's account rows and of the `platform` shard (account id, delta) the
    movement posts to; False (roll back!) if a guard refused it.

    Guards: no tenant balance goes negative; with `max_open`, the held account has fewer open reservations than
    that. `open_delta` moves the held account's count of open reservations (+1 reserve, -1 settle).
    """
    moves = [(Account.tenant_account_id(tenant_id, kind), delta) for kind, delta in deltas.items() if delta]
    rows = len(moves) + (1 if platform is not None and platform[1] else 0)
    if not rows:
        return True
    held_id = Account.tenant_account_id(tenant_id, AccountKind.HELD)
    return (
        sql.balances_move(moves=moves, held_id=held_id, open_delta=open_delta, max_open=max_open, platform=platform)
        == rows
    )


def _refused(error: Exception) -> Exception:
    """After a refused movement some rows may have moved: mark the transaction (or the caller's savepoint) for
    rollback, so it cannot commit even if a caller catches the error that follows."""
    transaction.set_rollback(True)
    return error


@dataclass(frozen=True)
class _Note:
    """Who posts a transaction and why, as it records them (a person's movements name both; a run's, its trace)."""

    actor: str = ""
    reason: str = ""
    trace_id: str = ""


def _tenant_legs(tenant_id: str, deltas: Mapping[str, int]) -> dict[str, int]:
    """The tenant's side of a movement as ledger legs: `deltas` (by account kind) keyed by the accounts' ids."""
    return {Account.tenant_account_id(tenant_id, kind): delta for kind, delta in deltas.items()}


def _post(
    kind: str, tenant_id: str, legs: Mapping[str, int], *, run_id: uuid.UUID | None = None, note: _Note
) -> LedgerTransaction:
    """Write the transaction and its entries (the caller moves the balances in the same database transaction)."""
    if sum(legs.values()) != 0:
        raise LedgerInvariantError(f"unbalanced {kind}: {dict(legs)}")
    txn = LedgerTransaction(kind=kind, tenant_id=tenant_id, run_id=run_id, created_at=timezone.now(), **asdict(note))
    entries = [(account_id, amount) for account_id, amount in legs.items() if amount]
    if connection.vendor == "postgresql":
        txn.pk = sql.transaction_insert_with_entries(txn=txn, entries=entries)
    else:
        txn.save(force_insert=True)
        LedgerEntry.objects.bulk_create(LedgerEntry(transaction=txn, account_id=a, amount_micros=m) for a, m in entries)
    return txn


def _available_micros(tenant_id: str) -> int:
    return (
        Account.objects.filter(pk=Account.tenant_account_id(tenant_id, AccountKind.AVAILABLE))
        .values_list("balance_micros", flat=True)
        .get()
    )


def ledger_reserve(
    *,
    tenant_id: str,
    run_id: uuid.UUID,
    amount_micros: int,
    trace_id: str,
    max_open: int | None = None,
    key_chain: Sequence[KeyNode] = (),
    accepted_at: datetime | None = None,
) -> LedgerTransaction:
    """available → held, or 402 INSUFFICIENT_FUNDS, or (with `max_open`) 429 CONCURRENCY_LIMITED when the tenant
    already has that many open reservations, or ReservationRacedError when neither holds any more (the caller
    rolls back and tries again). Locks the tenant's accounts until the caller commits. With the submitting key's
    `key_chain`, counts the reservation against its spend limits first (key_spend_reserve: 402 KEY_SPEND_LIMIT)."""
    _require_transaction()
    _check_amount(amount_micros)
    # The entries first, the balances last: the UPDATE takes the tenant's row locks, held until the commit that
    # follows it at once (the same invariants hold at commit either way; a refusal rolls all of it back).
    deltas: dict[str, int] = {AccountKind.AVAILABLE: -amount_micros, AccountKind.HELD: amount_micros}
    txn = _post(Kind.RESERVE, tenant_id, _tenant_legs(tenant_id, deltas), run_id=run_id, note=_Note(trace_id=trace_id))
    # The key counters just before the accounts (the lock order), and both as late as possible: every submit of
    # the tenant waits for these row locks, held until commit.
    key_spend_reserve(key_chain=key_chain, amount_micros=amount_micros, accepted_at=accepted_at or timezone.now())
    if not _move_balances(tenant_id, deltas, open_delta=1, max_open=max_open):
        raise _refused(_reserve_refusal(tenant_id, amount_micros, max_open))
    low_balance_watch(tenant_id=tenant_id, rose=False)
    return txn


def ledger_reserve_refusal(
    *,
    tenant_id: str,
    amount_micros: int,
    max_open: int | None,
    key_chain: Sequence[KeyNode] = (),
    at: datetime | None = None,
) -> ApplicationError | None:
    """What ledger_reserve would refuse now, the very same problem in its order (402 KEY_SPEND_LIMIT, then 402
    INSUFFICIENT_FUNDS, 429 CONCURRENCY_LIMITED), or None; read without a lock and without writing (a quote,
    runs.services.run_quote)."""
    refusal = key_spend_refusal(key_chain=key_chain, amount_micros=amount_micros, at=at or timezone.now())
    if refusal is None:
        balances = _reserve_refusal(tenant_id, amount_micros, max_open)
        refusal = balances if isinstance(balances, ApplicationError) else None
    return refusal


def _reserve_refusal(tenant_id: str, amount_micros: int, max_open: int | None) -> Exception:
    """Why the reservation was refused, read from the rows as they are now (the refused UPDATE holds their locks)."""
    available = _available_micros(tenant_id)
    if available < amount_micros:
        return ApplicationError(
            "INSUFFICIENT_FUNDS",
            f"This run needs {format_usd(amount_micros)} USD held; {format_usd(available)} USD is available.",
            extra={"available_usd": format_usd(available), "required_usd": format_usd(amount_micros)},
        )
    held = Account.objects.filter(pk=Account.tenant_account_id(tenant_id, AccountKind.HELD))
    if max_open is not None and held.values_list("open_reservations", flat=True).get() >= max_open:
        return ApplicationError(
            "CONCURRENCY_LIMITED",
            f"Your plan allows {max_open} runs at once; wait for one to end.",
            headers={"Retry-After": "2"},
        )
    return ReservationRacedError(f"tenant {tenant_id}: the balances changed while the reservation waited for them")


def ledger_settle(
    *,
    tenant_id: str,
    run_id: uuid.UUID,
    reserved_micros: int,
    charge_micros: int,
    trace_id: str,
    reason: str = "",
    counted_run: SubmittedRun | None = None,
) -> LedgerTransaction:
    """held → revenue (the charge) and held → available (the rest). At most once per run (unique constraint).
    `counted_run`: the run, when key spend counters count it: they get back what is released (key_spend_release)."""
    _require_transaction()
    _check_amount(reserved_micros)
    _check_amount(charge_micros, allow_zero=True)
    if charge_micros > reserved_micros:
        raise LedgerInvariantError(f"charge {charge_micros} exceeds reservation {reserved_micros}")
    released = reserved_micros - charge_micros
    revenue = Account.platform_account_for(AccountKind.REVENUE, run_id)
    deltas: dict[str, int] = {AccountKind.HELD: -reserved_micros, AccountKind.AVAILABLE: released}
    legs = {**_tenant_legs(tenant_id, deltas), revenue: charge_micros}
    txn = _post(Kind.SETTLE, tenant_id, legs, run_id=run_id, note=_Note(reason=reason, trace_id=trace_id))
    # As in ledger_reserve: the balances last, so that their row locks are held as briefly as possible.
    if counted_run is not None:  # the counters before the accounts (the lock order)
        key_spend_release(run=counted_run, released_micros=released)
    if not _move_balances(tenant_id, deltas, open_delta=-1, platform=(revenue, charge_micros)):
        raise _refused(LedgerInvariantError(f"held balance of {tenant_id} is below the reservation of run {run_id}"))
    return txn


# --- key spend counters (SPEC §8): never money, moved in the RESERVE's and the SETTLE's transactions ----------


def key_spend_reserve(*, key_chain: Sequence[KeyNode], amount_micros: int, accepted_at: datetime) -> None:
    """Count `amount_micros` in the current window of every key of the chain that has a spend limit, or raise
    402 KEY_SPEND_LIMIT naming the nearest key whose limit refuses it (the submitting key first, then up the tree).

    One statement: an INSERT … ON CONFLICT DO UPDATE whose update is conditional (spent + X ≤ limit), one row
    per limited key, root first — the order its row locks are taken in (the module's lock order). PostgreSQL
    judges an ON CONFLICT update on the newest committed version of the row, so a refusal is never a stale one.
    Call it before ledger_reserve, in the same transaction (the counters are locked before the accounts)."""
    _require_transaction()
    _check_amount(amount_micros)
    limited = limited_nodes(tuple(key_chain))
    if not limited:
        return
    # A key whose limit is below the amount itself refuses without a counter row (none is inserted for it); the
    # others are counted, and which of them refuse decides the key named, nearest first.
    candidates = [node for node in limited if not over_limit(node, spent_micros=0, amount_micros=amount_micros)]
    counted: set[int] = set()
    if candidates:
        sql, params = _key_spend_upsert(candidates, amount_micros, accepted_at)
        with hot_cursor() as cursor:
            cursor.execute(sql, params)
            counted = {row[0] for row in cursor.fetchall()}
    refusing = nearest(limited, lambda node: node.id not in counted)
    if refusing is not None:
        # The refusing key's spend as it is now: its counter row, if it has one, is locked by the upsert.
        spent = key_spend_spent(nodes=[refusing], at=accepted_at)[refusing.id]
        raise _refused(_key_limit_error(refusing, amount_micros, accepted_at, spent_micros=spent))


def key_spend_refusal(*, key_chain: Sequence[KeyNode], amount_micros: int, at: datetime) -> ApplicationError | None:
    """What key_spend_reserve would refuse at `at` — the very same 402 KEY_SPEND_LIMIT, naming the same key — or
    None; the counters read without a lock and nothing written (a quote). The upsert's condition, spent + X ≤
    limit, is dpp.key_limits.over_limit here."""
    limited = limited_nodes(tuple(key_chain))
    spent = key_spend_spent(nodes=limited, at=at)
    refusing = nearest(limited, lambda node: over_limit(node, spent_micros=spent[node.id], amount_micros=amount_micros))
    if refusing is None:
        return None
    return _key_limit_error(refusing, amount_micros, at, spent_micros=spent[refusing.id])


def _timestamp(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _key_spend_upsert(limited: Sequence[KeyNode], amount: int, at: datetime) -> tuple[str, list[Any]]:
    values: list[str] = []
    params: list[Any] = []
    for node in limited:
        start, end = window_bounds(node.spend_window, at)
        values.append("(CAST(%s AS bigint), %s, %s, %s, CAST(%s AS bigint))")
        params += [node.id, node.spend_window, _timestamp(start), _timestamp(end), amount]
    limits = ["WHEN CAST(%s AS bigint) THEN CAST(%s AS bigint)"] * len(limited)
    for node in limited:
        params += [node.id, node.spend_limit_micros]
    sql = (
        "INSERT INTO billing_keyspend (api_key_id, window_kind, window_start, window_end, spent_micros)"  # noqa: S608
        f" VALUES {', '.join(values)}"
        " ON CONFLICT (api_key_id, window_kind, window_start) DO UPDATE"
        " SET spent_micros = billing_keyspend.spent_micros + EXCLUDED.spent_micros"
        " WHERE billing_keyspend.spent_micros + EXCLUDED.spent_micros"
        f" <= CASE billing_keyspend.api_key_id {' '.join(limits)} END"
        " RETURNING api_key_id"
    )
    return sql, params


def _key_limit_error(node: KeyNode, amount_micros: int, at: datetime, *, spent_micros: int) -> ApplicationError:
    """The 402 of SPEC §4.1: the refusing key, its limit, window and spend, when the window resets (one function
    for the submit's refusal and the quote's)."""
    spent = spent_micros
    limit = node.spend_limit_micros or 0
    resets = resets_at(node.spend_window, at)
    return ApplicationError(
        "KEY_SPEND_LIMIT",
        f"Key {node.prefix} may commit {format_usd(limit)} USD per {node.spend_window} window and has committed"
        f" {format_usd(spent)} USD; this run needs {format_usd(amount_micros)} USD more.",
        extra={
            "limit_usd": format_usd(limit),
            "spent_usd": format_usd(spent),
            "required_usd": format_usd(amount_micros),
            "window": node.spend_window,
            "resets_at": resets.isoformat().replace("+00:00", "Z") if resets else None,
            "key_prefix": node.prefix,
        },
    )


# The counters of the run's key and of each key above it (one LEFT JOIN per level, as authentication reads the
# chain), for the windows containing the run's acceptance; locked root first, the lock order of key_spend_reserve.
_KEY_SPEND_RELEASE_SQL = """
UPDATE billing_keyspend SET spent_micros = spent_micros - CAST(%s AS bigint)
 WHERE id IN (SELECT s.id FROM dpp_apikey k
                LEFT JOIN dpp_apikey p1 ON p1.id = k.parent_id
                LEFT JOIN dpp_apikey p2 ON p2.id = p1.parent_id
                JOIN dpp_apikey a ON a.id IN (k.id, k.parent_id, p1.parent_id, p2.parent_id)
                JOIN billing_keyspend s ON s.api_key_id = a.id AND s.window_kind = a.spend_window
                 AND s.window_start <= %s AND s.window_end > %s
               WHERE k.id = CAST(%s AS bigint)
               ORDER BY a.depth{lock})
"""


def key_spend_release(*, run: SubmittedRun, released_micros: int) -> None:
    """Give back what a settle released (reserved − charged) to the windows the run was accepted in, for its key
    and every key above it that counts it. Call it before ledger_settle, in the same transaction."""
    _require_transaction()
    _check_amount(released_micros, allow_zero=True)
    if not released_micros or run.api_key_id is None:
        return
    lock = " FOR UPDATE OF s" if connection.features.has_select_for_update_of else ""
    accepted = _timestamp(run.created_at)
    with hot_cursor() as cursor:
        cursor.execute(_KEY_SPEND_RELEASE_SQL.format(lock=lock), [released_micros, accepted, accepted, run.api_key_id])


def _require_actor_and_reason(actor: str, reason: str) -> None:
    # Separate messages: the commands fill the actor in, so "needs an actor and a reason" sent people looking for
    # an actor they had not been asked for.
    if not reason.strip():
        raise ApplicationError("VALIDATION_ERROR", "A reason is needed: say why (a ticket, a contract, a note).")
    if not actor.strip():
        raise ApplicationError("VALIDATION_ERROR", "An actor is needed: who asks for this change.")


def _topup(*, tenant: Tenant, amount_micros: int, note: _Note) -> LedgerTransaction:
    """funding → available: credit bought or granted."""
    _require_actor_and_reason(note.actor, note.reason)
    _check_amount(amount_micros)

    def refusal() -> Exception:
        return LedgerInvariantError(f"tenant {tenant.pk} has no accounts")

    return _available_transfer(Kind.TOPUP, tenant, AccountKind.FUNDING, amount_micros, note, refusal=refusal)


def _adjust(*, tenant: Tenant, amount_micros: int, counterparty: str, note: _Note) -> LedgerTransaction:
    """A manual correction between the tenant's available balance and revenue or funding.

    `amount_micros` > 0 credits the tenant (e.g. a refund from revenue); < 0 debits it (never below zero).
    """
    _require_actor_and_reason(note.actor, note.reason)
    if counterparty not in (AccountKind.REVENUE, AccountKind.FUNDING):
        raise ValueError("an adjustment's counterparty is REVENUE or FUNDING")
    _check_amount(abs(amount_micros))

    def refusal() -> Exception:
        return ApplicationError(
            "INSUFFICIENT_FUNDS",
            f"The adjustment would take {tenant.pk}'s available balance below zero.",
            extra={
                "available_usd": format_usd(_available_micros(tenant.pk)),
                "required_usd": format_usd(-amount_micros),
            },
        )

    return _available_transfer(Kind.ADJUSTMENT, tenant, counterparty, amount_micros, note, refusal=refusal)


def _available_transfer(
    kind: str, tenant: Tenant, counterparty: str, amount_micros: int, note: _Note, *, refusal: Callable[[], Exception]
) -> LedgerTransaction:
    """`counterparty`'s platform shard → the tenant's available balance (the other way if `amount_micros` < 0):
    the balances and the transaction, then the low-balance watch; `refusal()` is raised if a guard refuses."""
    platform = Account.platform_account_for(counterparty, tenant.pk)
    deltas: dict[str, int] = {AccountKind.AVAILABLE: amount_micros}
    if not _move_balances(tenant.pk, deltas, platform=(platform, -amount_micros)):
        raise _refused(refusal())
    txn = _post(kind, tenant.pk, {platform: -amount_micros, **_tenant_legs(tenant.pk, deltas)}, note=note)
    low_balance_watch(tenant_id=tenant.pk, rose=amount_micros > 0)
    return txn


@transaction.atomic(durable=True)
def ledger_topup(
    *, tenant: Tenant, amount_micros: int, actor: str, reason: str, trace_id: str = ""
) -> LedgerTransaction:
    """funding → available: credit bought or granted."""
    return _topup(tenant=tenant, amount_micros=amount_micros, note=_Note(actor, reason, trace_id))


@transaction.atomic(durable=True)
def ledger_adjust(
    *, tenant: Tenant, amount_micros: int, counterparty: str, actor: str, reason: str, trace_id: str = ""
) -> LedgerTransaction:
    """A manual correction between the tenant's available balance and revenue or funding (`_adjust`)."""
    note = _Note(actor, reason, trace_id)
    return _adjust(tenant=tenant, amount_micros=amount_micros, counterparty=counterparty, note=note)


# --- money moved by a person (the admin's forms, the `topup` command) ----------------------------------------

# A typo guard, not a business rule: a larger credit is several top-ups, each with its reason.
MAX_MANUAL_MICROS = 1_000_000 * MICROS_PER_USD


def validate_manual_amount(micros: int) -> None:
    """An amount typed by a person: more than 0, at most MAX_MANUAL_MICROS (422 VALIDATION_ERROR)."""
    if micros <= 0:
        raise ApplicationError("VALIDATION_ERROR", "The amount must be more than 0.")
    if micros > MAX_MANUAL_MICROS:
        raise ApplicationError("VALIDATION_ERROR", f"At most {format_usd(MAX_MANUAL_MICROS)} USD at a time.")


def manual_amount_parse(raw: str) -> int:
    """An amount typed by a person (the admin's forms, the `topup` command) in micros, or 422 VALIDATION_ERROR
    saying in words what to type (the API's money messages name a regular expression)."""
    raw = raw.strip()
    try:
        micros = parse_usd(raw, field="amount")
    except ApplicationError as exc:
        raise ApplicationError("VALIDATION_ERROR", _amount_in_words(raw, exc.reason_code)) from None
    validate_manual_amount(micros)
    return micros


def _amount_in_words(raw: str, reason_code: str) -> str:
    if reason_code == "INVALID_MONEY_SCALE":
        return 'At most 4 decimals, e.g. "25.1234".'
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", raw):  # digits, yet refused: too many of them
        return f"At most {format_usd(MAX_MANUAL_MICROS)} USD at a time."
    return (
        'Type the amount in USD with digits and up to 4 decimals, e.g. "25" or "25.5000": no sign, no thousands '
        "separator, no currency symbol."
    )


@dataclass(frozen=True)
class ManualPost:
    transaction: LedgerTransaction
    replayed: bool  # the trace id had posted it already: nothing more moved


@transaction.atomic(durable=True)
def ledger_manual_post(
    *,
    tenant: Tenant,
    kind: str,
    amount_micros: int,
    actor: str,
    reason: str,
    counterparty: str = "",
    trace_id: str = "",
) -> ManualPost:
    """A TOPUP, or an ADJUSTMENT (`amount_micros` signed, against `counterparty`), typed by a person. At most one
    per `trace_id` (an admin form's one-time code): sent again, even at the same instant, it answers the first."""
    validate_manual_amount(amount_micros if kind == Kind.TOPUP else abs(amount_micros))
    if trace_id:
        _lock_manual_trace_id(trace_id)
        earlier = _manual_posted(trace_id)
        if earlier is not None:
            return _manual_replay(earlier, tenant=tenant, kind=kind)
    note = _Note(actor, reason, trace_id)
    try:
        with transaction.atomic():  # a savepoint: the unique index may refuse the INSERT (below)
            txn = _manual_move(
                tenant=tenant, kind=kind, amount_micros=amount_micros, counterparty=counterparty, note=note
            )
    except IntegrityError:
        # A twin with this trace id committed after our look (SQLite has no advisory lock; or it was posted
        # without this service): billing_manual_once_per_form refused our INSERT, and the twin is the answer.
        earlier = _manual_posted(trace_id) if trace_id else None
        if earlier is None:
            raise
        return _manual_replay(earlier, tenant=tenant, kind=kind)
    return ManualPost(transaction=txn, replayed=False)


def _manual_move(*, tenant: Tenant, kind: str, amount_micros: int, counterparty: str, note: _Note) -> LedgerTransaction:
    if kind == Kind.TOPUP:
        return _topup(tenant=tenant, amount_micros=amount_micros, note=note)
    if kind == Kind.ADJUSTMENT:
        return _adjust(tenant=tenant, amount_micros=amount_micros, counterparty=counterparty, note=note)
    raise ValueError(f"a manual movement is a TOPUP or an ADJUSTMENT, not {kind!r}")


def _lock_manual_trace_id(trace_id: str) -> None:
    """Serialise the posts of one trace id until commit (PostgreSQL), so that a twin sees the first one posted."""
    if connection.vendor == "postgresql":
        key = int.from_bytes(hashlib.sha256(trace_id.encode()).digest()[:8], "big", signed=True)
        sql.advisory_xact_lock(key)


def _manual_posted(trace_id: str) -> LedgerTransaction | None:
    """The manual movement already posted with this trace id, whichever tenant or kind."""
    # The unique partial index billing_manual_once_per_form answers it, whatever the age of the first post.
    found = LedgerTransaction.objects.filter(kind__in=[Kind.TOPUP, Kind.ADJUSTMENT], trace_id=trace_id)
    return found.only("pk", "tenant_id", "kind").first()


def _manual_replay(earlier: LedgerTransaction, *, tenant: Tenant, kind: str) -> ManualPost:
    if (earlier.tenant_id, earlier.kind) != (tenant.pk, kind):  # the code of another form, copied
        raise ApplicationError(
            "IDEMPOTENCY_KEY_REUSED", f"This code already posted {earlier.kind} #{earlier.pk} for another movement."
        )
    return ManualPost(transaction=earlier, replayed=True)


def _plan_assign(*, tenant: Tenant, plan_code: str, actor: str, reason: str) -> TenantPlan:
    try:
        plan = Plan.objects.get(code=plan_code)
    except Plan.DoesNotExist:
        codes = ", ".join(Plan.objects.order_by("code").values_list("code", flat=True))
        raise ApplicationError("VALIDATION_ERROR", f"no plan {plan_code!r} (plans: {codes})") from None
    TenantPlan.objects.filter(tenant=tenant, ended_at__isnull=True).update(ended_at=timezone.now())
    return TenantPlan.objects.create(tenant=tenant, plan=plan, actor=actor, reason=reason)


@transaction.atomic(durable=True)
def plan_assign(*, tenant: Tenant, plan_code: str, actor: str, reason: str) -> TenantPlan:
    """Switch the tenant to another plan; the previous one is closed, kept in the history.

    Two switches of one tenant at once take turns on the tenant's row lock: without it, both would close the same
    open plan and the second INSERT would break `billing_one_open_plan_per_tenant`."""
    _require_actor_and_reason(actor, reason)
    list(Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk", flat=True))
    return _plan_assign(tenant=tenant, plan_code=plan_code, actor=actor, reason=reason)


@transaction.atomic(durable=True)
def tenant_onboard(*, tenant_id: str, name: str = "", plan_code: str = "starter", actor: str) -> Tenant:
    """A tenant with its two accounts (zero balances) and its plan, all or nothing."""
    tenant = tenant_create(tenant_id=tenant_id, name=name)
    Account.objects.bulk_create(
        Account(id=Account.tenant_account_id(tenant.pk, kind), tenant=tenant, kind=kind)
        for kind in Account.TENANT_KINDS
    )
    _plan_assign(tenant=tenant, plan_code=plan_code, actor=actor, reason="onboarding")
    return tenant
