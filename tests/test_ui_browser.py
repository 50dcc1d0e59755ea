"""The chat app in a real browser: started as `make run` starts it (`manyheads ui`) on
loopback, driven by headless Chromium; its terminal output is checked too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest
from conftest import ROOT, free_port
from playwright.sync_api import sync_playwright

ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture
def app_url(tmp_path):
    port = free_port()
    env = {**os.environ, "MANYHEADS_DATABASE_URL": f"sqlite:///{tmp_path}/browser.db"}
    log = (tmp_path / "streamlit.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-c", "from manyheads.cli import main; main()", "ui", "--host",
         "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, (tmp_path / "streamlit.log").read_text()
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    yield url, tmp_path / "streamlit.log"
    server.terminate()
    server.wait(timeout=30)
    log.close()


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is needed: `make test` installs it (apt-get install chromium)"
    return path


@pytest.mark.slow
def test_a_person_chats_with_the_demo_room_in_chromium(app_url):
    app_url, terminal = app_url
    ARTIFACTS.mkdir(exist_ok=True)
    message = "<script>window.pwned = 1</script> bees & <b>honey</b>"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True,
                                             args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app_url)
        box = page.get_by_placeholder("Message the room")
        box.wait_for(timeout=120_000)
        box.fill(message)
        box.press("Enter")
        page.get_by_text("decoding stats").wait_for(timeout=300_000)  # drawn when the turn ends
        body = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "ui-demo-room.png"), full_page=True)
        pwned = page.evaluate("window.pwned")
        browser.close()
    assert message in body  # shown exactly as typed, tags and all
    assert pwned is None  # and never run
    assert "Ada" in body and "Basil" in body
    printed = terminal.read_text()
    assert "Traceback" not in printed, printed  # a quiet terminal
