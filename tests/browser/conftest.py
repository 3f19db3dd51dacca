"""Fixtures of the browser tests: one headless Chromium per module, a finance user, a screenshot on failure.

`tests/run.py` deselects this folder (and says so in one line) when Chromium or its driver is missing, so these
tests are never reported as passed without a browser.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from selenium.webdriver.remote.webdriver import WebDriver

from tests.helpers.admin import ensure_staff_groups
from tests.helpers.browser import chromium_driver
from tests.helpers.chromium import chromium_found

FINANCE_PASSWORD = "browser-test-password-1"


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    found = chromium_found()
    if found is None:
        pytest.fail("Chromium or chromedriver is missing: install the Debian packages chromium and chromium-driver")
    driver = chromium_driver(found)
    yield driver
    driver.quit()


@pytest.fixture
def finance_user(transactional_db: None) -> User:
    ensure_staff_groups()  # a transactional test flushed them
    user = User.objects.create_user(username="auditor", password=FINANCE_PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="finance"))
    return user


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed browser test leaves a PNG of the page under var/browser-screenshots/ of the checkout."""
    report = yield
    driver = getattr(item, "funcargs", {}).get("chromium")
    if report.failed and report.when == "call" and driver is not None:
        folder = Path(settings.BASE_DIR) / "var" / "browser-screenshots"  # outlives the run's throwaway var
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', item.nodeid)}.png"
        driver.save_screenshot(str(target))
        report.sections.append(("screenshot", f"{target} ({driver.current_url})"))
    return report
