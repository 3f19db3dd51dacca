"""Forms of the finance admin. Amounts are typed as USD strings and parsed by dpp.money: never a float."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from django import forms
from django.http import QueryDict

from billing.models import Account, LedgerTransaction
from billing.services import manual_amount_parse
from dpp.dates import utc_days
from dpp.http.errors import ApplicationError

_NONCE_RE = re.compile(r"[0-9a-f]{32}")
STALE_FORM = "This form's one-time code was missing or altered: check the values below and submit again."


class _ManualMovementForm(forms.Form):
    amount = forms.CharField(
        label="Amount (USD)",
        max_length=20,
        help_text='Up to 4 decimals, e.g. "25.0000".',
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    reason = forms.CharField(
        max_length=1000,
        help_text="Mandatory: recorded on the transaction and shown to auditors (ticket, invoice, wire reference).",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    # One form, one transaction: a resubmitted page (back button, double click) carries the same nonce.
    nonce = forms.CharField(widget=forms.HiddenInput, error_messages={"required": STALE_FORM})

    @staticmethod
    def new_nonce() -> str:
        return uuid.uuid4().hex

    def clean_amount(self) -> int:
        raw = self.cleaned_data["amount"].strip()
        try:
            return manual_amount_parse(raw)
        except ApplicationError as exc:
            raise forms.ValidationError(exc.detail) from None

    def clean_reason(self) -> str:
        reason: str = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason

    def clean_nonce(self) -> str:
        nonce: str = self.cleaned_data["nonce"]
        if not _NONCE_RE.fullmatch(nonce):
            raise forms.ValidationError(STALE_FORM)
        return nonce

    def renew_nonce_if_refused(self) -> None:
        """After a failed validation: a refused form code is replaced, so that the page, corrected and sent again,
        can post (the errors found stay shown)."""
        if "nonce" in self.errors:
            data = self.data.copy() if isinstance(self.data, QueryDict) else dict(self.data)  # one value per name
            data["nonce"] = self.new_nonce()
            self.data = data


class TopupForm(_ManualMovementForm):
    """funding → available."""


class AdjustForm(_ManualMovementForm):
    """A correction between the tenant's available balance and revenue or funding."""

    CREDIT, DEBIT = "credit", "debit"

    direction = forms.ChoiceField(
        choices=[(CREDIT, "Credit the tenant (available goes up)"), (DEBIT, "Debit the tenant (available goes down)")],
        widget=forms.RadioSelect,
    )
    counterparty = forms.ChoiceField(
        choices=[
            (Account.Kind.REVENUE, "Revenue — e.g. refund a charge, or charge by hand"),
            (Account.Kind.FUNDING, "Funding — e.g. goodwill credit, or reverse a top-up"),
        ],
        widget=forms.RadioSelect,
    )
    field_order = ("direction", "counterparty", "amount", "reason", "nonce")

    def signed_amount_micros(self) -> int:
        amount: int = self.cleaned_data["amount"]
        return amount if self.cleaned_data["direction"] == self.CREDIT else -amount


class TransactionExportForm(forms.Form):
    date_from = forms.DateField(label="From (UTC day, inclusive)", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="To (UTC day, inclusive)", widget=forms.DateInput(attrs={"type": "date"}))
    tenant = forms.RegexField(
        regex=r"^[a-z0-9_-]{3,64}$", required=False, help_text="Optional: one tenant id.", max_length=64
    )
    kind = forms.ChoiceField(choices=[("", "every kind"), *LedgerTransaction.Kind.choices], required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        return cleaned

    def created_range(self) -> tuple[dt.datetime, dt.datetime]:
        """[from 00:00 UTC, the day after `to` 00:00 UTC)."""
        return utc_days(self.cleaned_data["date_from"], self.cleaned_data["date_to"])
