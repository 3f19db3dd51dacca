"""billing.services: every money movement, its refusals, plan history, and the races (real threads, PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from billing.audit import ledger_audit
from billing.models import Account, LedgerEntry, LedgerTransaction, TenantPlan
from billing.selectors import balances_get, plan_get
from billing.services import (
    MAX_MANUAL_MICROS,
    LedgerInvariantError,
    ledger_adjust,
    ledger_manual_post,
    ledger_reserve,
    ledger_settle,
    ledger_topup,
    plan_assign,
    tenant_onboard,
)
from dpp.http.errors import ApplicationError
from tests.helpers.money import USD
from tests.helpers.personas import Persona, make_persona, unique_tenant_id
from tests.helpers.threads import at_once

REVENUE = "REVENUE"
FUNDING = "FUNDING"


def _legs(txn: LedgerTransaction) -> dict[str, int]:
    return dict(LedgerEntry.objects.filter(transaction=txn).values_list("account_id", "amount_micros"))


def _balance(account_id: str) -> int:
    """An account's balance; for a platform kind (REVENUE, FUNDING), the sum of its shards."""
    if account_id in Account.PLATFORM_KINDS:
        return sum(Account.objects.filter(kind=account_id).values_list("balance_micros", flat=True))
    return Account.objects.values_list("balance_micros", flat=True).get(pk=account_id)


def _ids(tenant_id: str) -> tuple[str, str]:
    return Account.tenant_account_id(tenant_id, "AVAILABLE"), Account.tenant_account_id(tenant_id, "HELD")


def _reserve(tenant_id: str, amount: int, run_id: uuid.UUID | None = None) -> tuple[uuid.UUID, LedgerTransaction]:
    run_id = run_id or uuid.uuid4()
    with transaction.atomic():
        txn = ledger_reserve(tenant_id=tenant_id, run_id=run_id, amount_micros=amount, trace_id="trace")
    return run_id, txn


def _settle(tenant_id: str, run_id: uuid.UUID, reserved: int, charge: int) -> LedgerTransaction:
    with transaction.atomic():
        return ledger_settle(
            tenant_id=tenant_id, run_id=run_id, reserved_micros=reserved, charge_micros=charge, trace_id="trace"
        )


def _ledger_size() -> tuple[int, int]:
    return LedgerTransaction.objects.count(), LedgerEntry.objects.count()


@pytest.mark.django_db
class TestOnboardAndTopup:
    def test_onboard_opens_two_empty_accounts_and_the_starter_plan(self) -> None:
        tenant = tenant_onboard(tenant_id=unique_tenant_id(), actor="test")
        available, held = _ids(tenant.pk)
        assert dict(Account.objects.filter(tenant=tenant).values_list("id", "balance_micros")) == {
            available: 0,
            held: 0,
        }
        assert plan_get(tenant_id=tenant.pk).code == "starter"

    def test_topup_moves_funding_to_available(self, owner: Persona) -> None:
        funding_before = _balance(FUNDING)
        txn = ledger_topup(tenant=owner.tenant, amount_micros=2_500_000, actor="finance:ann", reason="invoice 7")
        available, _ = _ids(owner.tenant.pk)
        assert txn.kind == "TOPUP"
        assert (txn.actor, txn.reason, txn.run_id) == ("finance:ann", "invoice 7", None)
        assert _legs(txn) == {Account.platform_account_for(FUNDING, owner.tenant.pk): -2_500_000, available: 2_500_000}
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD + 2_500_000
        assert _balance(FUNDING) == funding_before - 2_500_000
        assert _balance(FUNDING) < 0  # the outside world: negative by design

    @pytest.mark.parametrize(("actor", "reason"), [("", "why"), ("who", ""), ("  ", "why"), ("who", "   ")])
    def test_manual_movement_without_actor_or_reason_is_refused(self, owner: Persona, actor: str, reason: str) -> None:
        before = _ledger_size()
        with pytest.raises(ApplicationError) as raised:
            ledger_topup(tenant=owner.tenant, amount_micros=USD, actor=actor, reason=reason)
        assert raised.value.reason_code == "VALIDATION_ERROR"
        with pytest.raises(ApplicationError) as raised:
            ledger_adjust(tenant=owner.tenant, amount_micros=USD, counterparty="REVENUE", actor=actor, reason=reason)
        assert raised.value.reason_code == "VALIDATION_ERROR"
        assert _ledger_size() == before
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD

    @pytest.mark.parametrize("amount", [0, -100, 50, 150, 1_000_001])
    def test_topup_amount_must_be_a_positive_multiple_of_100(self, owner: Persona, amount: int) -> None:
        before = _ledger_size()
        with pytest.raises(ValueError, match="multiple of 100"):
            ledger_topup(tenant=owner.tenant, amount_micros=amount, actor="a", reason="r")
        assert _ledger_size() == before

    @pytest.mark.parametrize("amount", [1.0, True, "100"])
    def test_topup_amount_must_be_int(self, owner: Persona, amount: Any) -> None:
        with pytest.raises(TypeError, match="int micros"):
            ledger_topup(tenant=owner.tenant, amount_micros=amount, actor="a", reason="r")


@pytest.mark.django_db
class TestReserveAndSettle:
    def test_reserve_moves_available_to_held(self, owner: Persona) -> None:
        run_id, txn = _reserve(owner.tenant.pk, 50_000)
        available, held = _ids(owner.tenant.pk)
        assert (txn.kind, txn.run_id, txn.trace_id) == ("RESERVE", run_id, "trace")
        assert _legs(txn) == {available: -50_000, held: 50_000}
        balances = balances_get(tenant_id=owner.tenant.pk)
        assert (balances.available_micros, balances.held_micros) == (10 * USD - 50_000, 50_000)

    def test_reserve_of_everything_is_allowed(self, owner: Persona) -> None:
        _reserve(owner.tenant.pk, 10 * USD)
        balances = balances_get(tenant_id=owner.tenant.pk)
        assert (balances.available_micros, balances.held_micros) == (0, 10 * USD)

    def test_insufficient_funds_is_a_402_with_the_figures(self, owner: Persona) -> None:
        _reserve(owner.tenant.pk, 9 * USD)
        before = _ledger_size()
        with pytest.raises(ApplicationError) as raised:
            _reserve(owner.tenant.pk, 1_000_100)
        error = raised.value
        assert (error.reason_code, error.status) == ("INSUFFICIENT_FUNDS", 402)
        assert error.extra == {"available_usd": "1.0000", "required_usd": "1.0001"}
        # The caller's transaction rolled back: nothing moved, nothing was written.
        assert _ledger_size() == before
        balances = balances_get(tenant_id=owner.tenant.pk)
        assert (balances.available_micros, balances.held_micros) == (USD, 9 * USD)

    def test_settle_with_charge_zero_releases_everything(self, owner: Persona) -> None:
        run_id, _ = _reserve(owner.tenant.pk, 50_000)
        revenue_before = _balance(REVENUE)
        txn = _settle(owner.tenant.pk, run_id, 50_000, 0)
        available, held = _ids(owner.tenant.pk)
        assert (txn.kind, txn.run_id) == ("SETTLE", run_id)
        assert _legs(txn) == {held: -50_000, available: 50_000}  # no zero entry on revenue
        balances = balances_get(tenant_id=owner.tenant.pk)
        assert (balances.available_micros, balances.held_micros) == (10 * USD, 0)
        assert _balance(REVENUE) == revenue_before

    def test_partial_settle_splits_between_revenue_and_available(self, owner: Persona) -> None:
        run_id, _ = _reserve(owner.tenant.pk, 50_000)
        revenue_before = _balance(REVENUE)
        txn = _settle(owner.tenant.pk, run_id, 50_000, 11_000)
        available, held = _ids(owner.tenant.pk)
        assert _legs(txn) == {held: -50_000, available: 39_000, Account.platform_account_for(REVENUE, run_id): 11_000}
        balances = balances_get(tenant_id=owner.tenant.pk)
        assert (balances.available_micros, balances.held_micros) == (10 * USD - 11_000, 0)
        assert _balance(REVENUE) == revenue_before + 11_000

    def test_full_settle_charges_the_whole_reservation(self, owner: Persona) -> None:
        run_id, _ = _reserve(owner.tenant.pk, 50_000)
        txn = _settle(owner.tenant.pk, run_id, 50_000, 50_000)
        _, held = _ids(owner.tenant.pk)
        revenue = Account.platform_account_for(REVENUE, run_id)
        assert _legs(txn) == {held: -50_000, revenue: 50_000}  # no zero entry on available
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD - 50_000
        assert ledger_audit().ok

    def test_charge_above_the_reservation_is_refused(self, owner: Persona) -> None:
        run_id, _ = _reserve(owner.tenant.pk, 50_000)
        before = _ledger_size()
        with pytest.raises(LedgerInvariantError, match="exceeds reservation"):
            _settle(owner.tenant.pk, run_id, 50_000, 50_100)
        assert _ledger_size() == before
        assert balances_get(tenant_id=owner.tenant.pk).held_micros == 50_000

    @pytest.mark.parametrize(("reserved", "charge"), [(50_050, 0), (50_000, 150), (50_000, -100), (0, 0)])
    def test_settle_amounts_must_be_multiples_of_100(self, owner: Persona, reserved: int, charge: int) -> None:
        run_id, _ = _reserve(owner.tenant.pk, 50_000)
        with pytest.raises(ValueError, match="multiple of 100"):
            _settle(owner.tenant.pk, run_id, reserved, charge)
        assert LedgerTransaction.objects.filter(run_id=run_id, kind="SETTLE").count() == 0

    @pytest.mark.parametrize("amount", [0, 150, -100])
    def test_reserve_amount_must_be_a_positive_multiple_of_100(self, owner: Persona, amount: int) -> None:
        with pytest.raises(ValueError, match="multiple of 100"):
            _reserve(owner.tenant.pk, amount)
        assert balances_get(tenant_id=owner.tenant.pk).held_micros == 0

    def test_settle_more_than_is_held_is_refused(self, owner: Persona) -> None:
        run_id, _ = _reserve(owner.tenant.pk, 50_000)
        with pytest.raises(LedgerInvariantError, match="below the reservation"):
            _settle(owner.tenant.pk, run_id, 60_000, 0)
        assert balances_get(tenant_id=owner.tenant.pk).held_micros == 50_000

    def test_second_settle_of_a_run_is_refused_by_the_database(self, owner: Persona) -> None:
        run_id, _ = _reserve(owner.tenant.pk, 50_000)
        _reserve(owner.tenant.pk, 50_000)  # enough held for a second settle to get as far as its INSERT
        _settle(owner.tenant.pk, run_id, 50_000, 5_000)
        with pytest.raises(IntegrityError, match="billing_once_per_run"):
            _settle(owner.tenant.pk, run_id, 50_000, 5_000)
        assert LedgerTransaction.objects.filter(run_id=run_id, kind="SETTLE").count() == 1


@pytest.mark.django_db
class TestAdjust:
    @pytest.mark.parametrize("counterparty", ["REVENUE", "FUNDING"])
    @pytest.mark.parametrize("amount", [30_000, -30_000])
    def test_adjust_both_directions_and_counterparties(self, owner: Persona, counterparty: str, amount: int) -> None:
        platform = Account.platform_account_for(counterparty, owner.tenant.pk)
        platform_before = _balance(platform)
        txn = ledger_adjust(
            tenant=owner.tenant, amount_micros=amount, counterparty=counterparty, actor="finance:bo", reason="fix"
        )
        available, _ = _ids(owner.tenant.pk)
        assert (txn.kind, txn.actor, txn.reason) == ("ADJUSTMENT", "finance:bo", "fix")
        assert _legs(txn) == {platform: -amount, available: amount}
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD + amount
        assert _balance(platform) == platform_before - amount
        assert ledger_audit().ok

    def test_adjust_below_zero_is_refused(self, owner: Persona) -> None:
        before = _ledger_size()
        with pytest.raises(ApplicationError) as raised:
            ledger_adjust(
                tenant=owner.tenant, amount_micros=-10 * USD - 100, counterparty="REVENUE", actor="f", reason="r"
            )
        assert raised.value.reason_code == "INSUFFICIENT_FUNDS"
        assert raised.value.extra == {"available_usd": "10.0000", "required_usd": "10.0001"}
        assert _ledger_size() == before

    def test_adjust_to_exactly_zero_is_allowed(self, owner: Persona) -> None:
        ledger_adjust(tenant=owner.tenant, amount_micros=-10 * USD, counterparty="FUNDING", actor="f", reason="r")
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 0

    @pytest.mark.parametrize("counterparty", ["HELD", "AVAILABLE", "revenue", ""])
    def test_adjust_counterparty_is_revenue_or_funding(self, owner: Persona, counterparty: str) -> None:
        with pytest.raises(ValueError, match="REVENUE or FUNDING"):
            ledger_adjust(tenant=owner.tenant, amount_micros=100, counterparty=counterparty, actor="f", reason="r")

    @pytest.mark.parametrize("amount", [0, 150, -50])
    def test_adjust_amount_must_be_a_nonzero_multiple_of_100(self, owner: Persona, amount: int) -> None:
        with pytest.raises(ValueError, match="multiple of 100"):
            ledger_adjust(tenant=owner.tenant, amount_micros=amount, counterparty="REVENUE", actor="f", reason="r")


@pytest.mark.django_db
class TestPlanAssign:
    def test_plan_changes_keep_their_history(self, owner: Persona) -> None:
        first = TenantPlan.objects.get(tenant=owner.tenant)
        second = plan_assign(tenant=owner.tenant, plan_code="unlimited", actor="sales:kim", reason="upgrade")
        third = plan_assign(tenant=owner.tenant, plan_code="starter", actor="sales:kim", reason="downgrade")
        assert plan_get(tenant_id=owner.tenant.pk).code == "starter"
        history = list(TenantPlan.objects.filter(tenant=owner.tenant).order_by("pk"))
        assert [row.pk for row in history] == [first.pk, second.pk, third.pk]
        assert [row.plan.code for row in history] == ["starter", "unlimited", "starter"]
        assert [row.ended_at is None for row in history] == [False, False, True]
        assert history[0].ended_at is not None
        assert history[0].ended_at >= history[0].started_at
        assert (history[1].actor, history[1].reason) == ("sales:kim", "upgrade")

    def test_unknown_plan_is_refused_and_changes_nothing(self, owner: Persona) -> None:
        with pytest.raises(ApplicationError) as raised:
            plan_assign(tenant=owner.tenant, plan_code="platinum", actor="a", reason="r")
        assert raised.value.reason_code == "VALIDATION_ERROR"
        assert TenantPlan.objects.filter(tenant=owner.tenant, ended_at__isnull=True).count() == 1
        assert plan_get(tenant_id=owner.tenant.pk).code == "starter"

    def test_plan_assign_needs_actor_and_reason(self, owner: Persona) -> None:
        with pytest.raises(ApplicationError):
            plan_assign(tenant=owner.tenant, plan_code="unlimited", actor="a", reason="")
        assert plan_get(tenant_id=owner.tenant.pk).code == "starter"

    def test_the_database_allows_one_open_plan_only(self, owner: Persona) -> None:
        current = TenantPlan.objects.get(tenant=owner.tenant)
        with pytest.raises(IntegrityError, match="billing_one_open_plan_per_tenant"), transaction.atomic():
            TenantPlan.objects.create(tenant=owner.tenant, plan=current.plan, actor="x", started_at=timezone.now())
        assert TenantPlan.objects.filter(tenant=owner.tenant).count() == 1


# --- races: real threads, each with its own PostgreSQL connection ----------------------------------------------


@pytest.mark.django_db
class TestManualPost:
    """What a person posts (the admin's forms, the `topup` command): validated, and once per trace id."""

    def test_a_topup_and_an_adjustment_move_money(self, owner: Persona) -> None:
        available, _ = _ids(owner.tenant.pk)
        common: dict[str, Any] = {"tenant": owner.tenant, "actor": "admin:ann", "reason": "wire 9"}
        topup = ledger_manual_post(kind="TOPUP", amount_micros=3 * USD, trace_id="a" * 32, **common)
        assert (topup.replayed, topup.transaction.kind, topup.transaction.trace_id) == (False, "TOPUP", "a" * 32)
        assert _legs(topup.transaction) == {
            Account.platform_account_for(FUNDING, owner.tenant.pk): -3 * USD,
            available: 3 * USD,
        }
        debit = ledger_manual_post(kind="ADJUSTMENT", amount_micros=-USD, counterparty="REVENUE", **common)
        assert (debit.replayed, debit.transaction.kind, debit.transaction.trace_id) == (False, "ADJUSTMENT", "")
        assert _legs(debit.transaction) == {
            Account.platform_account_for(REVENUE, owner.tenant.pk): USD,
            available: -USD,
        }
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 12 * USD

    def test_the_same_trace_id_posts_once_and_answers_the_first(self, owner: Persona) -> None:
        post: dict[str, Any] = {"tenant": owner.tenant, "kind": "TOPUP", "amount_micros": USD}
        post |= {"actor": "a", "reason": "r"}
        first = ledger_manual_post(trace_id="b" * 32, **post)
        before = _ledger_size()
        again = ledger_manual_post(trace_id="b" * 32, **post)
        assert (again.replayed, again.transaction.pk) == (True, first.transaction.pk)
        assert _ledger_size() == before
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 11 * USD

    def test_a_trace_id_of_another_movement_is_refused(self, owner: Persona) -> None:
        ledger_manual_post(tenant=owner.tenant, kind="TOPUP", amount_micros=USD, actor="a", reason="r", trace_id="c")
        other = make_persona().tenant
        before = _ledger_size()
        with pytest.raises(ApplicationError) as raised:
            ledger_manual_post(tenant=other, kind="TOPUP", amount_micros=USD, actor="a", reason="r", trace_id="c")
        assert raised.value.reason_code == "IDEMPOTENCY_KEY_REUSED"
        with pytest.raises(ApplicationError) as raised:
            ledger_manual_post(
                tenant=owner.tenant,
                kind="ADJUSTMENT",
                amount_micros=USD,
                counterparty="FUNDING",
                actor="a",
                reason="r",
                trace_id="c",
            )
        assert raised.value.reason_code == "IDEMPOTENCY_KEY_REUSED"
        assert _ledger_size() == before

    @pytest.mark.parametrize(
        ("kind", "amount", "message"),
        [
            ("TOPUP", 0, "The amount must be more than 0."),
            ("TOPUP", -USD, "The amount must be more than 0."),
            ("ADJUSTMENT", 0, "The amount must be more than 0."),
            ("TOPUP", MAX_MANUAL_MICROS + 100, "At most 1000000.0000 USD at a time."),
            ("ADJUSTMENT", -MAX_MANUAL_MICROS - 100, "At most 1000000.0000 USD at a time."),
        ],
    )
    def test_amounts_a_person_would_not_mean_are_refused(
        self, owner: Persona, kind: str, amount: int, message: str
    ) -> None:
        before = _ledger_size()
        with pytest.raises(ApplicationError) as raised:
            ledger_manual_post(
                tenant=owner.tenant, kind=kind, amount_micros=amount, counterparty="FUNDING", actor="a", reason="r"
            )
        assert (raised.value.reason_code, raised.value.detail) == ("VALIDATION_ERROR", message)
        assert _ledger_size() == before

    def test_the_typo_guard_itself_is_allowed(self, owner: Persona) -> None:
        ledger_manual_post(tenant=owner.tenant, kind="TOPUP", amount_micros=MAX_MANUAL_MICROS, actor="a", reason="r")
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == MAX_MANUAL_MICROS + 10 * USD


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    def test_money_moves_only_inside_a_transaction(self) -> None:
        owner = make_persona(credit_micros=USD)
        assert not connection.in_atomic_block
        with pytest.raises(RuntimeError, match="inside the database transaction"):
            ledger_reserve(tenant_id=owner.tenant.pk, run_id=uuid.uuid4(), amount_micros=100, trace_id="t")
        with pytest.raises(RuntimeError, match="inside the database transaction"):
            ledger_settle(
                tenant_id=owner.tenant.pk, run_id=uuid.uuid4(), reserved_micros=100, charge_micros=0, trace_id="t"
            )
        assert balances_get(tenant_id=owner.tenant.pk).held_micros == 0

    def test_a_manual_post_is_never_nested_in_another_transaction(self) -> None:
        owner = make_persona()
        with pytest.raises(RuntimeError, match="durable"), transaction.atomic():
            ledger_manual_post(tenant=owner.tenant, kind="TOPUP", amount_micros=USD, actor="a", reason="r")
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD

    def test_concurrent_plan_changes_take_turns(self) -> None:
        owner = make_persona()
        codes = ["unlimited", "starter"] * 5

        def change(code: str) -> Callable[[], None]:
            def assign() -> None:
                plan_assign(tenant=owner.tenant, plan_code=code, actor="a", reason="r")

            return assign

        assert at_once([change(code) for code in codes]) == []
        history = TenantPlan.objects.filter(tenant=owner.tenant)
        assert history.count() == 1 + len(codes)  # onboarding, then every change, none lost
        assert history.filter(ended_at__isnull=True).count() == 1

    def test_fifty_reservations_race_for_ten_dollars(self) -> None:
        owner = make_persona(credit_micros=10 * USD)
        tenant_id = owner.tenant.pk
        outcomes: list[str] = []
        writers_done = threading.Event()
        seen: list[tuple[int, int]] = []

        def reserve() -> None:
            try:
                _reserve(tenant_id, USD)
                outcomes.append("ok")
            except ApplicationError as exc:
                outcomes.append(exc.reason_code)

        def read() -> None:
            while not writers_done.is_set() or len(seen) < 5:
                balances = balances_get(tenant_id=tenant_id)
                seen.append((balances.available_micros, balances.held_micros))

        reader_errors: list[BaseException] = []
        reader = threading.Thread(target=_read_then_close, args=(read, reader_errors))
        reader.start()
        errors = at_once([reserve] * 50)
        writers_done.set()
        reader.join(timeout=60)

        assert errors == []
        assert reader_errors == []
        assert sorted(outcomes) == ["INSUFFICIENT_FUNDS"] * 40 + ["ok"] * 10
        balances = balances_get(tenant_id=tenant_id)
        assert (balances.available_micros, balances.held_micros) == (0, 10 * USD)
        assert LedgerTransaction.objects.filter(tenant_id=tenant_id, kind="RESERVE").count() == 10
        assert seen, "the reader saw nothing"
        assert all(available >= 0 and held >= 0 for available, held in seen)
        assert {available + held for available, held in seen} == {10 * USD}
        report = ledger_audit()
        assert report.ok, report.violations
        assert report.transactions == 11

    def test_concurrent_settles_and_topups_of_one_tenant(self) -> None:
        owner = make_persona(credit_micros=10 * USD)
        tenant_id = owner.tenant.pk
        runs = [(_reserve(tenant_id, 200_000)[0], 200_000, charge) for charge in [0, 5_000, 200_000, 77_700] * 5]
        revenue_before = _balance(REVENUE)

        def settle(run_id: uuid.UUID, reserved: int, charge: int) -> Callable[[], None]:
            def target() -> None:
                _settle(tenant_id, run_id, reserved, charge)

            return target

        def topup() -> None:
            ledger_topup(tenant=owner.tenant, amount_micros=USD, actor="test", reason="race")

        errors = at_once([settle(*run) for run in runs] + [topup] * 5)

        assert errors == []  # no deadlock, no lost update
        charged = sum(charge for _, _, charge in runs)
        balances = balances_get(tenant_id=tenant_id)
        assert (balances.available_micros, balances.held_micros) == (10 * USD - charged + 5 * USD, 0)
        assert _balance(REVENUE) == revenue_before + charged
        report = ledger_audit()
        assert report.ok, report.violations
        assert report.transactions == 1 + 20 + 20 + 5


def _read_then_close(read: Callable[[], None], errors: list[BaseException]) -> None:
    try:
        read()
    except BaseException as exc:  # handed to the test thread
        errors.append(exc)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_a_refused_reservation_cannot_be_committed_even_if_the_error_is_caught() -> None:
    """The refused UPDATE may already have moved held: the transaction is marked for rollback."""
    import uuid as _uuid

    from django.db import transaction as _transaction

    from billing.selectors import balances_get
    from billing.services import ledger_reserve
    from dpp.http.errors import ApplicationError
    from tests.helpers.personas import make_persona

    persona = make_persona(credit_micros=10_000)
    with _transaction.atomic(), pytest.raises(ApplicationError, match="INSUFFICIENT_FUNDS"):
        ledger_reserve(tenant_id=persona.tenant.pk, run_id=_uuid.uuid4(), amount_micros=20_000, trace_id="t")
    balances = balances_get(tenant_id=persona.tenant.pk)
    assert (balances.available_micros, balances.held_micros) == (10_000, 0)
