"""Headless Chromium for tests (Debian's chromium + chromium-driver, driven by Selenium).

Use the ``browser`` fixture (``from tests.support.browser import browser_fixture`` in a test module)
or ``chromium(folder)``; both skip the test, saying why, only when the browser cannot start.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1600,1200",
)


@dataclass
class Browser:
    """A started headless Chromium: the Selenium driver, and what the pages asked and said."""

    driver: Any
    shots: Path
    _log: list[dict] = field(default_factory=list)

    def open(self, path: Path) -> None:
        """Load a local file and wait until its scripts have run."""
        self.driver.get(path.resolve().as_uri())

    def _drain(self) -> None:
        self._log += [
            json.loads(e["message"])["message"] for e in self.driver.get_log("performance")
        ]

    def reset(self) -> None:
        """Forget the requests and console messages so far (the browser's own start-up page)."""
        self.driver.get_log("performance")
        self.driver.get_log("browser")
        self._log.clear()

    def requested_urls(self) -> list[str]:
        """Every URL any page asked for since the start (documents, scripts, images, fetches)."""
        self._drain()
        return [
            m["params"]["request"]["url"]
            for m in self._log
            if m["method"] == "Network.requestWillBeSent"
        ]

    def console_errors(self) -> list[str]:
        """Console errors and uncaught exceptions of the pages since the last call."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def screenshot(self, name: str) -> Path:
        """Save a screenshot of the window as ``name``.png under the test's folder."""
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def mouse(self, kind: str, x: float, y: float) -> None:
        """A real mouse event at page coordinates (CSS pixels): moved, pressed or released."""
        event = {"type": f"mouse{kind.capitalize()}", "x": x, "y": y, "button": "left"}
        if kind != "moved":
            event["clickCount"] = 1
        self.driver.execute_cdp_cmd("Input.dispatchMouseEvent", event)

    def click(self, x: float, y: float) -> None:
        """Move to, press and release the left button at page coordinates."""
        for kind in ("moved", "pressed", "released"):
            self.mouse(kind, x, y)


def _start(profile: str) -> Any:
    """A Selenium driver for Debian's headless Chromium with a fresh profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@contextmanager
def chromium(shots: Path) -> Iterator[Browser]:
    """A headless Chromium; screenshots go to ``shots``. Skips the test if it cannot start."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(
            f"headless browser tests need {' and '.join(missing)}: "
            "apt-get install -y chromium chromium-driver"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("browser tests need selenium: pip install -e '.[test]'")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        try:
            driver = _start(profile)
        except Exception as error:  # any start failure: no browser, so nothing to test here
            pytest.skip(f"headless Chromium could not start: {str(error).splitlines()[0]}")
        try:
            driver.set_page_load_timeout(120)
            started = Browser(driver, shots)
            driver.get("about:blank")
            started.reset()
            yield started
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(name="browser")
def browser_fixture(tmp_path: Path) -> Iterator[Browser]:
    """A headless Chromium for one test; screenshots under the test's tmp_path."""
    with chromium(tmp_path) as started:
        yield started
