"""Shapes of the runs API for the OpenAPI document (SPEC §4). Parsing happens in runs.submission, rendering in
runs.presenters: these classes describe, they do not convert."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_serializer, inline_serializer
from rest_framework import serializers

from packs.registry import all_packs

# Exactly what runs.submission accepts for max_cost_usd (dpp.money.parse_max_cost): 1 to 12 ASCII digits, up
# to 4 decimals, from 0.0001 to 10000.0000 — written out so that a client or a fuzzer generating from the schema
# stays in range: 1 to 9999.9999, 10000, 0.0001 to 0.9999, each after any number of leading zeros.
MONEY_PATTERN = (
    r"^0*(?:(?:[1-9][0-9]{0,3})(?:\.[0-9]{1,4})?"
    r"|10000(?:\.0{1,4})?"
    r"|0\.(?:[1-9][0-9]{0,3}|0[1-9][0-9]{0,2}|00[1-9][0-9]?|000[1-9]))$"
)


class ReservationIn(serializers.Serializer[Any]):
    max_cost_usd = serializers.RegexField(
        MONEY_PATTERN, help_text='The most this run may cost, e.g. "0.0500" (> 0, ≤ 10000.0000).'
    )
    timebox_sec = serializers.IntegerField(min_value=1, max_value=90, required=False, default=90)


class MetaIn(serializers.Serializer[Any]):
    """Only `trace_id`: any other member is 422 VALIDATION_ERROR, as at the top level and in `reservation`."""

    trace_id = serializers.RegexField(
        r"^[A-Za-z0-9_.:-]{1,64}$", required=False, help_text="Follows the run through its logs; else generated."
    )


class RunSubmitIn(serializers.Serializer[Any]):
    pack_type = serializers.ChoiceField(choices=[pack.pack_type for pack in all_packs()])
    inputs = serializers.DictField(help_text="Pack specific: see input_schema in GET /v1/packs.")
    reservation = ReservationIn()
    meta = MetaIn(required=False)


class QuoteReservationIn(serializers.Serializer[Any]):
    """A quote's reservation (SPEC §9): optional, and so is its max cost (without one, the suggested is checked)."""

    max_cost_usd = serializers.RegexField(
        MONEY_PATTERN, required=False, help_text='The max cost to check, e.g. "0.0500"; else the suggested one.'
    )
    timebox_sec = serializers.IntegerField(min_value=1, max_value=90, required=False, default=90)


class RunQuoteIn(serializers.Serializer[Any]):
    pack_type = serializers.ChoiceField(choices=[pack.pack_type for pack in all_packs()])
    inputs = serializers.DictField(help_text="Pack specific: see input_schema in GET /v1/packs.")
    reservation = QuoteReservationIn(required=False)
    meta = MetaIn(required=False)


class QuoteOut(serializers.Serializer[Any]):
    pack_type = serializers.CharField()
    price_floor_usd = serializers.CharField(help_text="the least this run can cost (4-decimal USD)")
    price_ceiling_usd = serializers.CharField(help_text="the most this run can cost, before the cap")
    price_exact = serializers.BooleanField(help_text="floor = ceiling: the price is known in advance")
    suggested_max_cost_usd = serializers.CharField(help_text="a reservation that covers the ceiling")
    minimum_fee_usd = serializers.CharField(help_text="of the given max_cost_usd, or else of the suggested one")
    available_usd = serializers.CharField(help_text="your available balance now")
    key_spend_remaining_usd = serializers.CharField(
        allow_null=True,
        help_text="what your API key may still commit now: the least room left under its spend limit and those of "
        "the keys above it (the tightest is the one that refuses); null: no key of the chain has a spend limit",
    )
    accepted = serializers.BooleanField(help_text="always true: a submit that would be refused gets its problem")


class PollOut(serializers.Serializer[Any]):
    href = serializers.CharField()
    recommended_interval_ms = serializers.IntegerField()
    max_wait_sec = serializers.IntegerField()


class ReservationOut(serializers.Serializer[Any]):
    max_cost_usd = serializers.CharField()
    minimum_fee_usd = serializers.CharField()
    currency = serializers.CharField()


class ReceiptMetaOut(serializers.Serializer[Any]):
    created_at = serializers.DateTimeField()
    trace_id = serializers.CharField()
    profile_version = serializers.CharField()


class ReceiptOut(serializers.Serializer[Any]):
    run_id = serializers.UUIDField()
    status = serializers.CharField()
    poll = PollOut()
    reservation = ReservationOut()
    meta = ReceiptMetaOut()


class CostOut(serializers.Serializer[Any]):
    reserved_usd = serializers.CharField()
    used_usd = serializers.CharField(allow_null=True)
    minimum_fee_usd = serializers.CharField()
    budget_remaining_usd = serializers.CharField()


class ResultOut(serializers.Serializer[Any]):
    url = serializers.CharField(
        allow_null=True,
        help_text="Where to fetch the envelope. Local storage: this API's /v1/runs/{id}/result (send your key). "
        "S3: a presigned URL, valid for AWS_QUERYSTRING_EXPIRE seconds (900 by default) from this answer — read "
        "the run (or GET /v1/runs/{id}/result) again for a fresh one. null once the result has expired.",
    )
    sha256 = serializers.CharField(help_text="SHA-256 of the envelope's bytes exactly as served.")
    bytes = serializers.IntegerField()
    expires_at = serializers.DateTimeField(
        help_text="When the result leaves retention (DPP_RESULT_RETENTION_DAYS after the run ended); after it, "
        "/result answers 410. Not the lifetime of a signed URL."
    )


class RunErrorOut(serializers.Serializer[Any]):
    reason_code = serializers.CharField()
    detail = serializers.CharField()


class RunMetaOut(serializers.Serializer[Any]):
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    cancel_requested_at = serializers.DateTimeField(
        allow_null=True, help_text="When a cancel of this run was requested while it was PROCESSING; else null."
    )
    trace_id = serializers.CharField()
    profile_version = serializers.CharField()


class RunOut(serializers.Serializer[Any]):
    run_id = serializers.UUIDField()
    pack_type = serializers.CharField()
    status = serializers.ChoiceField(choices=["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED"])
    money_state = serializers.ChoiceField(choices=["RESERVED", "SETTLED", "REFUNDED"])
    cost = CostOut()
    result = ResultOut(allow_null=True)
    error = RunErrorOut(allow_null=True)
    meta = RunMetaOut()


RunPageOut = inline_serializer(
    "RunPage", {"data": RunOut(many=True), "next_cursor": serializers.CharField(allow_null=True)}
)


class UsageDayOut(serializers.Serializer[Any]):
    date = serializers.DateField()
    runs = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField()
    expired = serializers.IntegerField()
    charged_usd = serializers.CharField()
    reserved_usd = serializers.CharField()


class UsageOut(serializers.Serializer[Any]):
    to = serializers.DateField()
    days = UsageDayOut(many=True)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["from"] = serializers.DateField()  # a Python keyword: added by name
        return fields


class PackPlanOut(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="the caller's plan")
    allowed = serializers.BooleanField(help_text="false: a submit of this pack answers 403 PACK_NOT_ALLOWED")
    max_cost_usd = serializers.CharField(allow_null=True, help_text="the plan's most per run; null if not allowed")


class PackOut(serializers.Serializer[Any]):
    pack_type = serializers.CharField()
    description = serializers.CharField()
    input_schema = serializers.DictField()
    pricing = serializers.DictField()
    max_timebox_sec = serializers.IntegerField()
    plan = PackPlanOut()


PackListOut = inline_serializer("PackList", {"data": PackOut(many=True)})


class DecisionRankingOut(serializers.Serializer[Any]):
    option = serializers.CharField()
    score = serializers.FloatField(help_text="rounded to 6 decimals; higher is better")
    rank = serializers.IntegerField(help_text="1 = the winner")


class DecisionSensitivityOut(serializers.Serializer[Any]):
    criterion = serializers.CharField()
    weight_change_to_flip = serializers.FloatField(
        allow_null=True, help_text="the smallest change of this criterion's weight that changes the winner; null: none"
    )


@extend_schema_serializer(component_name="DecisionOutput")
class DecisionOutputOut(serializers.Serializer[Any]):
    """The `data` of a decision run's envelope (SPEC §4.0)."""

    winner = serializers.CharField()
    method = serializers.ChoiceField(choices=["weighted_sum", "topsis"])
    ranking = DecisionRankingOut(many=True)
    weights = serializers.DictField(child=serializers.FloatField(), help_text="criterion -> normalised weight")
    sensitivity = DecisionSensitivityOut(many=True)


# The result envelope (runs.results.envelope_bytes): its SHA-256 is the run's result.sha256 and the ETag. `data`
# is the pack's output, documented as DecisionOutput or another pack's object (runs.openapi). (Inline: a field
# named `data` would shadow Serializer.data.)
ResultEnvelopeOut = inline_serializer(
    "ResultEnvelope",
    {
        "run_id": serializers.UUIDField(),
        "finalize_token": serializers.UUIDField(),
        "pack_type": serializers.CharField(),
        "profile_version": serializers.CharField(),
        "actual_cost_usd_micros": serializers.IntegerField(help_text="what the run was charged, in micro-USD"),
        "created_at": serializers.DateTimeField(),
        "started_at": serializers.DateTimeField(allow_null=True),
        "finished_at": serializers.DateTimeField(),
        "trace_id": serializers.CharField(),
        "data": DecisionOutputOut(),
    },
)
