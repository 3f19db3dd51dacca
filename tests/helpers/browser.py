"""Headless Chromium driven by Selenium, as a finance auditor uses the admin: a 1400×1000 window, logged in
through the admin's own login form."""

from __future__ import annotations

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.chromium import Chromium

WIDTH, HEIGHT = 1400, 1000
WAIT_SECONDS = 15


def chromium_driver(found: Chromium) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = found.browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=found.driver))
    driver.set_window_size(WIDTH, HEIGHT)
    driver.set_page_load_timeout(30)
    return driver


def wait_for(driver: WebDriver, css: str) -> WebElement:
    condition = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    element: WebElement = WebDriverWait(driver, WAIT_SECONDS).until(condition)
    return element


def admin_login(driver: WebDriver, base_url: str, *, username: str, password: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base_url}/admin/login/?next=/admin/")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#login-form input[type=submit]").click()
    wait_for(driver, "#dpp-alarms")  # the index, logged in


def page_width(driver: WebDriver) -> int:
    """The document's scroll width: more than the window means a horizontal scroll bar."""
    width: int = driver.execute_script("return document.documentElement.scrollWidth")
    return width


def texts(driver: WebDriver, css: str) -> list[str]:
    return [element.text.strip() for element in driver.find_elements(By.CSS_SELECTOR, css)]
