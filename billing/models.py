"""The money of DPP: a double-entry ledger in PostgreSQL (SPEC §2).

Accounts: per tenant `AVAILABLE` and `HELD`; platform-wide `REVENUE` and `FUNDING` (the outside world, may be
negative), each kept in `PLATFORM_SHARDS` shard accounts (`@revenue/00` … `@revenue/15`, SPEC §12): a settle
posts to the shard its run id picks, a top-up or an adjustment to the one its tenant picks, so no row is locked
by every run. The platform's revenue is the sum of its shards. An account's id is its natural key
(`<tenant>/available`, `@revenue/07`), so a service can write an entry without first reading the account.
A platform account without a shard (`@revenue`, `@funding`) is the one account of its kind from before the
sharding (migration 0009): kept, with its entries and balance, and never written again (docs/decisions.md).

A `LedgerTransaction` is a set of `LedgerEntry` rows whose signed amounts sum to exactly zero; an entry adds
its amount to its account's balance. Every transaction is written in one database transaction together with
the state change it belongs to, and with the conditional UPDATE of the balances it moves.

Invariants, and where each is kept:
1. every transaction sums to zero — a deferred constraint trigger (PostgreSQL) and `audit_ledger`;
2. each stored balance equals the sum of its entries — balances change only in `billing.services`, in the same
   transaction as the entries; checked by `audit_ledger`;
3. tenant balances are ≥ 0 — CHECK constraint, and the conditional UPDATE that moves them;
4. a tenant's held balance equals its open reservations (RESERVE without SETTLE), and its `open_reservations`
   counts them — `audit_ledger`;
5. per run at most one RESERVE and one SETTLE — a partial unique constraint; charge ≤ reserved — the run's
   CHECK constraint and `ledger_settle`.
Entries and transactions are append-only: triggers refuse UPDATE and DELETE, the admin offers neither.
All amounts are int micros, multiples of 100 (CHECK constraints).
"""

from __future__ import annotations

import uuid
import zlib

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Mod
from django.db.models.lookups import Exact
from django.utils import timezone

from dpp.models import Tenant
from dpp.money import format_usd

PLATFORM_PREFIX = "@"
# Shard accounts per platform kind (rows created by migration 0009). `DPP_PLATFORM_SHARDS` (1 … this) says
# over how many of them new movements spread: 1 forces every movement onto shard 00, the one hot row of before
# (bench/hot_rows.py measures the difference).
PLATFORM_SHARDS = 16


def platform_shard(key: uuid.UUID | str) -> int:
    """The shard a movement posts to: from a run id (its random low bits) or a tenant id (a CRC of it).

    A tenant's own top-ups and adjustments already take turns on its account rows, so giving them all one
    funding shard adds no lock that is not there anyway."""
    spread = max(1, min(int(settings.DPP_PLATFORM_SHARDS), PLATFORM_SHARDS))
    value = key.int if isinstance(key, uuid.UUID) else zlib.crc32(key.encode())
    return value % spread


class Plan(models.Model):
    """What a tenant may do: packs and their max cost per run, request rates, concurrent runs."""

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    # {pack_type: max cost per run in micros}; the keys are the packs the plan allows.
    pack_max_cost_micros = models.JSONField(default=dict)
    submits_per_min = models.PositiveIntegerField()
    reads_per_min = models.PositiveIntegerField()
    max_concurrent_runs = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("code",)
        constraints = [
            models.CheckConstraint(condition=Q(submits_per_min__gt=0), name="billing_plan_submits_positive"),
            models.CheckConstraint(condition=Q(reads_per_min__gt=0), name="billing_plan_reads_positive"),
            models.CheckConstraint(condition=Q(max_concurrent_runs__gt=0), name="billing_plan_concurrency_positive"),
        ]

    def __str__(self) -> str:
        return self.code

    def allows(self, pack_type: str) -> bool:
        return pack_type in self.pack_max_cost_micros

    def packs_outside(self, packs: tuple[str, ...] | None) -> list[str]:
        """Those of `packs` the plan does not include (a key's allowed packs are a subset of its plan's)."""
        return sorted(pack for pack in packs or () if not self.allows(pack))

    def max_cost_micros(self, pack_type: str) -> int:
        return int(self.pack_max_cost_micros[pack_type])


class TenantPlan(models.Model):
    """The history of a tenant's plans; exactly one is open (ended_at NULL) at a time."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="plan_history")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="tenant_plans")
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    actor = models.CharField(max_length=150)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ("-started_at",)
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"], condition=Q(ended_at__isnull=True), name="billing_one_open_plan_per_tenant"
            ),
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True) | Q(ended_at__gte=F("started_at")),
                name="billing_plan_period",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}: {self.plan.code}"


class Account(models.Model):
    class Kind(models.TextChoices):
        AVAILABLE = "AVAILABLE"
        HELD = "HELD"
        REVENUE = "REVENUE"
        FUNDING = "FUNDING"

    TENANT_KINDS = (Kind.AVAILABLE, Kind.HELD)
    PLATFORM_KINDS = (Kind.REVENUE, Kind.FUNDING)

    id = models.CharField(primary_key=True, max_length=80)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, null=True, blank=True, related_name="accounts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    balance_micros = models.BigIntegerField(default=0)
    # HELD only: how many reservations it holds (RESERVE without SETTLE), moved in the same UPDATE as the
    # balance, so a plan's concurrency limit is checked under the row lock the reservation takes anyway.
    open_reservations = models.PositiveIntegerField(default=0)
    # Platform accounts only: which of the kind's PLATFORM_SHARDS accounts this is (NULL: the pre-shard account).
    shard = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "kind"],
                condition=Q(tenant__isnull=False),
                name="billing_one_account_per_kind",
            ),
            models.UniqueConstraint(
                fields=["kind", "shard"],
                condition=Q(tenant__isnull=True),
                name="billing_one_platform_account_per_shard",
            ),
            models.CheckConstraint(
                condition=Q(shard__isnull=True) | (Q(tenant__isnull=True) & Q(shard__lt=PLATFORM_SHARDS)),
                name="billing_shard_of_platform",
            ),
            models.CheckConstraint(
                condition=(Q(tenant__isnull=False) & Q(kind__in=["AVAILABLE", "HELD"]))
                | (Q(tenant__isnull=True) & Q(kind__in=["REVENUE", "FUNDING"])),
                name="billing_account_kind_owner",
            ),
            models.CheckConstraint(
                condition=Q(tenant__isnull=True) | Q(balance_micros__gte=0),
                name="billing_tenant_balance_nonneg",
            ),
            models.CheckConstraint(condition=Exact(Mod("balance_micros", 100), 0), name="billing_balance_granule"),
            models.CheckConstraint(
                condition=Q(kind="HELD") | Q(open_reservations=0), name="billing_open_reservations_on_held"
            ),
        ]

    def __str__(self) -> str:
        return self.id

    @staticmethod
    def tenant_account_id(tenant_id: str, kind: str) -> str:
        return f"{tenant_id}/{kind.lower()}"

    @staticmethod
    def platform_account_id(kind: str, shard: int) -> str:
        return f"{PLATFORM_PREFIX}{kind.lower()}/{shard:02d}"

    @staticmethod
    def platform_account_for(kind: str, key: uuid.UUID | str) -> str:
        """The shard account of `kind` that a movement keyed by `key` (a run id, a tenant id) posts to."""
        return Account.platform_account_id(kind, platform_shard(key))

    @staticmethod
    def platform_prefix(kind: str) -> str:
        """What every account of a platform kind's id starts with (its shards and the pre-shard account)."""
        return f"{PLATFORM_PREFIX}{kind.lower()}"


class LedgerTransaction(models.Model):
    class Kind(models.TextChoices):
        TOPUP = "TOPUP"
        RESERVE = "RESERVE"
        SETTLE = "SETTLE"
        ADJUSTMENT = "ADJUSTMENT"

    RUN_KINDS = (Kind.RESERVE, Kind.SETTLE)

    kind = models.CharField(max_length=16, choices=Kind.choices)
    # No index of its own: billing_txn_tenant_id leads with the tenant (every index is paid on every INSERT).
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="ledger_transactions", db_index=False)
    # The run this transaction belongs to (RESERVE, SETTLE); not a foreign key: billing does not depend on runs.
    run_id = models.UUIDField(null=True, blank=True)
    actor = models.CharField(max_length=150, blank=True)
    reason = models.TextField(blank=True)
    trace_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-id",)
        # Manual money movements from the admin (groups `finance`, billing migration 0002).
        permissions = [("topup", "Can top up tenant credit"), ("adjust", "Can make a manual adjustment")]
        indexes = [
            models.Index(fields=["tenant", "-id"], name="billing_txn_tenant_id"),
            models.Index(fields=["created_at"], name="billing_txn_created"),
            models.Index(fields=["kind", "created_at"], name="billing_txn_kind_created"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["run_id", "kind"],
                condition=Q(kind__in=["RESERVE", "SETTLE"]),
                name="billing_once_per_run",
            ),
            models.CheckConstraint(
                condition=(Q(kind__in=["RESERVE", "SETTLE"]) & Q(run_id__isnull=False))
                | (Q(kind__in=["TOPUP", "ADJUSTMENT"]) & Q(run_id__isnull=True)),
                name="billing_run_kinds_have_run",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["RESERVE", "SETTLE"]) | (~Q(actor="") & ~Q(reason="")),
                name="billing_manual_has_actor_and_reason",
            ),
            # A manual movement posted from an admin form carries the form's one-time code as its trace id: one
            # form, one transaction, even when a double click sends it twice at once.
            models.UniqueConstraint(
                fields=["trace_id"],
                condition=Q(kind__in=["TOPUP", "ADJUSTMENT"]) & ~Q(trace_id=""),
                name="billing_manual_once_per_form",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.tenant_id})"


class LedgerEntry(models.Model):
    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="entries")
    # Indexed in Meta: a plain B-tree, without the LIKE index Django adds to a character foreign key.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries", db_index=False)
    amount_micros = models.BigIntegerField()

    class Meta:
        ordering = ("id",)
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["account"], name="billing_entry_account")]
        constraints = [
            models.CheckConstraint(condition=~Q(amount_micros=0), name="billing_entry_nonzero"),
            models.CheckConstraint(condition=Exact(Mod("amount_micros", 100), 0), name="billing_entry_granule"),
        ]

    def __str__(self) -> str:
        sign = "+" if self.amount_micros > 0 else ""  # a leg's direction, in the admin's money format
        return f"{self.account_id} {sign}{format_usd(self.amount_micros)}"


class AuditCheckpoint(models.Model):
    """How far the incremental ledger audit has summed the ledger: every transaction with id ≤ `watermark` and
    every entry with id ≤ `entry_watermark` (an entry appended later to an old transaction is still new).

    Written by `billing.audit_incremental.ledger_audit_incremental` (the hourly audit), one row per audit; the
    newest is in force. The watermark is only ever a transaction id that no open database transaction can still
    commit below (docs/decisions.md, "The incremental audit")."""

    watermark = models.BigIntegerField()
    entry_watermark = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    transactions_checked = models.BigIntegerField(default=0)

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.CheckConstraint(
                condition=Q(watermark__gte=0, entry_watermark__gte=0), name="billing_checkpoint_watermark"
            )
        ]

    def __str__(self) -> str:
        return f"ledger audited up to transaction {self.watermark}"


class AccountCheckpoint(models.Model):
    """An account's sums over the transactions up to the newest `AuditCheckpoint`'s watermark: its entries, and
    (held accounts) its open reservations — RESERVEs without their SETTLE — in number and in micros."""

    account = models.OneToOneField(Account, primary_key=True, on_delete=models.CASCADE, related_name="checkpoint")
    entries_micros = models.BigIntegerField(default=0)
    open_reservations = models.BigIntegerField(default=0)
    open_micros = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.account_id}: {self.entries_micros}"


class KeySpend(models.Model):
    """What one API key's runs (its own and those of every key below it) have committed in one spend window: the
    counter behind SPEC §8's spend limits, moved by conditional UPDATEs in the RESERVE's and the SETTLE's database
    transactions (billing.services.key_spend_reserve / key_spend_release).

    Not money and not a source of truth: the runs are. `spent` = the reservations of the window's runs still open
    plus the charges of those settled; `audit_ledger` checks it against the runs and `rebuild_key_spend`
    recomputes it. A row covers [window_start, window_end): a UTC day, a UTC month, or all time (`total`).
    """

    api_key = models.ForeignKey("dpp.ApiKey", on_delete=models.PROTECT, related_name="spend_windows", db_index=False)
    window_kind = models.CharField(max_length=8)  # dpp.models.SpendWindow
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    spent_micros = models.BigIntegerField(default=0)

    class Meta:
        ordering = ("api_key", "-window_start")
        verbose_name = "key spend window"
        constraints = [
            # The arbiter of key_spend_reserve's INSERT … ON CONFLICT; leads with the key (its FK index).
            models.UniqueConstraint(fields=["api_key", "window_kind", "window_start"], name="billing_keyspend_window"),
            models.CheckConstraint(condition=Q(window_end__gt=F("window_start")), name="billing_keyspend_range"),
        ]

    def __str__(self) -> str:
        spent = format_usd(self.spent_micros)
        return f"key {self.api_key_id} {self.window_kind} from {self.window_start:%Y-%m-%d}: {spent}"
