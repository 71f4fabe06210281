"""The page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
type, watch the answer stream, Stop, see what was kept and why, continue, reload.

``make test`` installs the browser when it is missing; with ``CI=true`` a missing browser is a
failure, not a skip. A screenshot of a stopped chat is saved in the test's output directory.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_worker.models import OfflineModel

from .conftest import RunningServer, start_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT_ENV = "LLM_WORKER_SCREENSHOT_DIR"  # also copy the screenshot there (for the docs)


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        message = (
            f"{' and '.join(missing)} missing: `make test` installs chromium and chromium-driver"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1100,800",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(
        ("asyncio", {}),
        tmp_path / "chats.db",
        model_factory=lambda: OfflineModel(pace=0.06),
        tools="demo",
    )
    try:
        yield server
    finally:
        server.stop()


def wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


PAGE_STATE = """
const texts = (selector) => Array.from(document.querySelectorAll(selector), (e) => e.innerText);
return {
  stop: !document.getElementById("stop").hidden,
  answers: texts(".message.assistant .bubble"),
  answerText: texts(".message.assistant .text-part"),
  users: texts(".message.user"),
  marks: texts(".message.assistant .interrupted"),
  tools: texts(".tool"),
  toolStates: texts(".tool .state"),
  chats: texts("#chat-list .open"),
};
"""


def page(driver: Any) -> dict[str, Any]:
    """What the page shows, read in one script (the page re-renders while it streams)."""
    state: dict[str, Any] = driver.execute_script(PAGE_STATE)
    return state


def click(driver: Any, selector: str) -> None:
    driver.execute_script(f"document.querySelector({selector!r}).click()")


def send(driver: Any, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    prompt = driver.find_element(By.ID, "prompt")
    prompt.send_keys(text)
    prompt.send_keys(Keys.ENTER)


def test_a_person_can_chat_stop_continue_and_reload_in_the_page(
    browser: Any, page_server: RunningServer, tmp_path: Path
) -> None:
    browser.get(page_server.url + "/")
    wait(browser, lambda d: d.execute_script("return !!document.getElementById('prompt')"))
    assert not page(browser)["stop"]  # visible exactly while a run is active

    send(browser, "Tell me about stopping agents")
    wait(browser, lambda d: page(d)["answerText"] and len(page(d)["answerText"][0]) > 20)
    assert page(browser)["stop"]
    click(browser, "#stop")
    wait(browser, lambda d: page(d)["marks"] and not page(d)["stop"])
    state = page(browser)
    assert "stopped from the page" in state["marks"][0]
    kept = state["answerText"][0]
    assert kept
    browser.save_screenshot(str(tmp_path / "stopped-chat.png"))
    if os.environ.get(SCREENSHOT_ENV):
        target = Path(os.environ[SCREENSHOT_ENV]) / "web-stopped-chat.png"
        shutil.copy(tmp_path / "stopped-chat.png", target)

    click(browser, ".interrupted .continue")  # continue the interrupted answer
    wait(browser, lambda d: len(page(d)["answers"]) == 2)
    wait(browser, lambda d: not page(d)["stop"] and len(page(d)["answers"][1]) > 10, 40)
    assert len(page(browser)["marks"]) == 1

    browser.refresh()  # the history comes back from the session
    wait(browser, lambda d: len(page(d)["answers"]) == 2)
    state = page(browser)
    assert len(state["users"]) == 1
    assert kept[:20] in state["answers"][0]
    assert "Interrupted" in state["marks"][0]
    assert state["chats"] == ["Tell me about stopping agents"]


def test_escape_stops_a_running_tool_and_shows_its_partial_output(
    browser: Any, page_server: RunningServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(page_server.url + "/")
    wait(browser, lambda d: d.execute_script("return !!document.getElementById('prompt')"))
    send(browser, "get_weather for Paris and slow_count to 40")
    wait(browser, lambda d: any("running" in state for state in page(d)["toolStates"]))
    time.sleep(1.2)  # let it count a little: the partial output shows it
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait(browser, lambda d: page(d)["marks"] and not page(d)["stop"])
    wait(browser, lambda d: "interrupted" in page(d)["tools"][1])
    tools = page(browser)["tools"]
    assert "done" in tools[0]
    assert "before being stopped" in tools[1]
    browser.save_screenshot(str(tmp_path / "stopped-tool.png"))
    if os.environ.get(SCREENSHOT_ENV):
        target = Path(os.environ[SCREENSHOT_ENV]) / "web-stopped-tool.png"
        shutil.copy(tmp_path / "stopped-tool.png", target)


HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "[click](javascript:alert(1))",
    '[x](http://a.example/" onmouseover="alert(1))',
    "```\n<b>code</b>\n```",
    "**<i>bold</i>**",
]


def test_the_markdown_renderer_escapes_html_before_it_adds_any(
    browser: Any, page_server: RunningServer
) -> None:
    browser.get(page_server.url + "/")
    wait(browser, lambda d: d.execute_script("return !!window.llmMarkdown"))
    rendered = browser.execute_script(
        "return arguments[0].map((t) => window.llmMarkdown.render(t));", HOSTILE
    )
    for html in rendered:
        assert "<img" not in html
        assert "<script" not in html
        assert "javascript:" not in html.split("href=")[-1] or "href=" not in html
        assert 'onmouseover="' not in html
        assert "<i>" not in html
        assert "<b>" not in html
    sample = "# Title\n\n- **bold** and `code`\n- [a link](https://example.org)\n\n```\nx < y\n```"
    html = browser.execute_script("return window.llmMarkdown.render(arguments[0]);", sample)
    assert "<strong>bold</strong>" in html
    assert "<code>code</code>" in html
    assert '<a href="https://example.org"' in html
    assert "x &lt; y" in html
