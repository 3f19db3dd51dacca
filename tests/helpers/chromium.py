"""Where Debian's Chromium and its driver are (packages `chromium` and `chromium-driver`), without importing
Selenium or Django: `tests/run.py` asks it before deciding whether the browser tests run at all."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Chromium:
    browser: str
    driver: str


def chromium_found() -> Chromium | None:
    """CHROMIUM_BIN / CHROMEDRIVER_BIN, else `chromium` and `chromedriver` on PATH; None when either is missing."""
    browser = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver")
    return Chromium(browser, driver) if browser and driver else None
