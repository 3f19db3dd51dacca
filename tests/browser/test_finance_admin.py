"""A finance auditor in headless Chromium at 1400×1000, against a live server (SPEC §13): a tenant's page and
balance, a top-up, the runs sorted by charge over a custom date range with their totals, an open flag as an alarm
on the index, a refused delete of a ledger row, and no horizontal scroll on the runs and ledger lists."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone
from pytest_django.live_server_helper import LiveServer
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from billing.models import LedgerTransaction
from reaper.models import AuditFlag
from tests.browser.conftest import FINANCE_PASSWORD
from tests.helpers.browser import WIDTH, admin_login, page_width, texts, wait_for
from tests.helpers.personas import make_persona, make_plan, persona_on_plan
from tests.helpers.states import ago, completed_run

DAY = 86_400


def _login(chromium: WebDriver, live_server: LiveServer, user: User) -> str:
    admin_login(chromium, live_server.url, username=user.username, password=FINANCE_PASSWORD)
    return str(live_server.url)


def test_reads_a_tenant_balance_and_posts_a_top_up(
    chromium: WebDriver, live_server: LiveServer, finance_user: User
) -> None:
    persona = make_persona(prefix="acme", credit_micros=2_500_000)
    base = _login(chromium, live_server, finance_user)
    chromium.get(f"{base}/admin/dpp/tenant/")
    search = wait_for(chromium, "#searchbar")
    search.send_keys(persona.tenant.pk[5:11].upper())  # a part of the id, another case
    search.submit()
    wait_for(chromium, "#result_list")
    assert texts(chromium, "#result_list td.field-available") == ["2.5000"]
    chromium.find_element(By.LINK_TEXT, persona.tenant.pk).click()
    assert wait_for(chromium, ".field-available .readonly").text == "2.5000"
    chromium.find_element(By.CSS_SELECTOR, ".object-tools a[href$='/topup/']").click()  # CSS shows TOP UP
    wait_for(chromium, "input[name=amount]").send_keys("1.2500")
    chromium.find_element(By.NAME, "reason").send_keys("wire 2026-12 from acme")
    chromium.find_element(By.CSS_SELECTOR, "input[type=submit][value='Top up']").click()
    message = wait_for(chromium, ".messagelist .success").text
    assert "TOPUP" in message
    assert "of 1.2500 USD: wire 2026-12 from acme. Available is now 3.7500 USD." in message
    assert wait_for(chromium, ".field-available .readonly").text == "3.7500"


def test_sorts_runs_by_charge_over_a_custom_range_and_reads_the_totals(
    chromium: WebDriver, live_server: LiveServer, finance_user: User
) -> None:
    persona = persona_on_plan(make_plan("browser"))
    with ago(3 * DAY):  # outside the range below: neither listed nor in the totals
        completed_run(persona, cost_micros=45_000, max_cost_usd="0.0500")
    charged = [completed_run(persona, cost_micros=cost).charged_micros for cost in (10_000, 30_000, 20_000)]
    assert charged == [10_000, 30_000, 20_000]
    base = _login(chromium, live_server, finance_user)
    chromium.get(f"{base}/admin/runs/run/")
    today = timezone.localdate()
    wait_for(chromium, "input[name=created_at__range__gte]").send_keys((today - timedelta(days=1)).isoformat())
    chromium.find_element(By.NAME, "created_at__range__lte").send_keys(today.isoformat())
    chromium.find_element(By.CSS_SELECTOR, ".admindatefilter input[type=submit]").click()
    wait_for(chromium, "#dpp-totals")
    assert "created_at__range__gte" in chromium.current_url
    chromium.find_element(By.CSS_SELECTOR, "th.column-charged a").click()  # ascending first
    wait_for(chromium, "th.column-charged.sorted")
    chromium.find_element(By.CSS_SELECTOR, "th.column-charged a.toggle").click()  # then descending
    wait_for(chromium, "th.column-charged.sorted.descending")
    assert texts(chromium, "#result_list td.field-charged") == ["0.0300", "0.0200", "0.0100"]
    assert texts(chromium, ".dpp-total") == ["reserved 0.1500", "charged 0.0600"]
    assert all(len(cell) == 8 for cell in texts(chromium, "#result_list th.field-short_id"))  # short run ids
    assert page_width(chromium) <= WIDTH


def test_an_open_flag_is_an_alarm_on_the_index(
    chromium: WebDriver, live_server: LiveServer, finance_user: User
) -> None:
    AuditFlag.objects.create(kind=AuditFlag.Kind.HELD_MISMATCH, subject="acme", tenant_id="acme", detail="off")
    base = _login(chromium, live_server, finance_user)
    chromium.get(f"{base}/admin/")
    alarm = wait_for(chromium, "#dpp-alarms a[data-alarm='open audit flags']")
    assert alarm.text == "⚠ 1"
    assert "dpp-alarm" in (alarm.get_attribute("class") or "")
    assert alarm.value_of_css_property("background-color") == "rgba(186, 33, 33, 1)"  # red, not a green check
    alarm.click()
    assert texts(chromium, "#result_list td.field-state") == ["⚠ OPEN"]
    assert not chromium.find_elements(By.CSS_SELECTOR, "#result_list img[alt='True']")


def test_a_ledger_delete_is_refused_on_an_admin_page(
    chromium: WebDriver, live_server: LiveServer, finance_user: User
) -> None:
    persona = make_persona(prefix="ledger", credit_micros=1_000_000)
    topup = LedgerTransaction.objects.get(tenant=persona.tenant, kind=LedgerTransaction.Kind.TOPUP)
    base = _login(chromium, live_server, finance_user)
    chromium.get(f"{base}/admin/billing/ledgertransaction/")
    wait_for(chromium, "#result_list")
    assert page_width(chromium) <= WIDTH
    chromium.get(f"{base}/admin/billing/ledgertransaction/{topup.pk}/delete/")
    page = wait_for(chromium, ".dpp-refusal").text
    assert "This delete was refused: nothing was changed." in page
    assert "The ledger is append-only" in page
    assert chromium.find_element(By.ID, "site-name").text == "DPP administration"  # the admin's own page
    assert LedgerTransaction.objects.filter(pk=topup.pk).exists()
