"""``carbonx serve --web PORT`` as users run it: the web portal beside the gateway on
127.0.0.1, its logins the embedded broker's credentials file (an account sees its own
holdings after a trade over MQTT, not another's; no login, 401), and the options refused
with a clear message when they cannot work."""

from __future__ import annotations

import json
import urllib.error
from concurrent.futures import ThreadPoolExecutor
import urllib.request
from base64 import b64encode

import pytest
from mosquitto import free_port
from test_gateway_cli import FUNDING, carbonx, start_serve, stop, trade


def get(url: str, login: tuple[str, str] | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url)
    if login is not None:
        token = b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            json_body = response.headers.get_content_type() == "application/json"
            return response.status, json.loads(body) if json_body else body.decode()
    except urllib.error.HTTPError as error:
        return error.code, None


def test_serve_with_the_web_portal(tmp_path):
    (tmp_path / "init.csv").write_text(FUNDING)
    port, web = free_port(), free_port()
    process, lines = start_serve("--init", "init.csv", "--journal", "j", "--port", str(port),
                                 "--always-open", "--web", str(web), cwd=tmp_path)
    try:
        assert any(f"web portal on http://127.0.0.1:{web}/" in line for line in lines), lines
        logins = json.loads((tmp_path / "j" / "credentials.json").read_text())
        sold, bought = trade(port, logins)
        assert sold["report"] == bought["report"] == "accepted"
        base = f"http://127.0.0.1:{web}/api/v1"
        assert get(f"{base}/instruments")[0] == 401
        status, rows = get(f"{base}/accounts/bob/holdings", ("bob", logins["bob"]))
        assert status == 200
        assert {(r["asset"], r["locked"]) for r in rows} >= {("CEA25", 100)}  # T+1
        assert get(f"{base}/accounts/alice/holdings", ("bob", logins["bob"]))[0] == 403
        assert get(f"{base}/accounts", ("operator", logins["operator"]))[0] == 200
        assert get(f"http://127.0.0.1:{web}/", ("bob", logins["bob"]))[0] == 200
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert logins["bob"] not in err  # passwords are never logged


@pytest.mark.parametrize(("args", "message"), [
    (["serve", "--broker", "mqtt://gateway:pw@127.0.0.1:1", "--web", "8080"],
     "--web with --broker needs --web-credentials"),
    (["demo", "--web", "0"], "--web must be a port number"),
])
def test_web_options_that_cannot_work_exit_2(tmp_path, args, message):
    done = carbonx(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_web_port_in_use_leaves_no_journal_and_no_credentials(tmp_path, command):
    """The portal's port is tried before anything is written, as the embedded broker's
    is: a port in use is exit 2 and an empty directory, so the same command with another
    port then starts afresh (a demo's --journal DIR is not left holding a journal)."""
    import socket

    (tmp_path / "init.csv").write_text(FUNDING)
    args = (["serve", "--init", "init.csv", "--port", str(free_port()), "--always-open"]
            if command == "serve" else ["demo", "--seconds", "1"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        web = taken.getsockname()[1]
        done = carbonx(*args, "--journal", "j", "--web", str(web), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"the web portal cannot listen on 127.0.0.1:{web}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "j").exists() or not any((tmp_path / "j").iterdir())
    assert not (tmp_path / "carbonx-credentials.json").exists()


def test_a_trade_over_mqtt_shows_on_the_pages_without_a_reload(tmp_path):
    """The whole path as users have it: `carbonx serve --web`, two bots trading over MQTT
    through the embedded broker, and alice's market and account pages in headless Chromium
    showing the trade within a second, with no reload."""
    import os
    from pathlib import Path

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{chromium} is missing (CI is set: a failure, not a skip)")
        pytest.skip(f"{chromium} is missing: install Debian's chromium")
    from playwright.sync_api import expect, sync_playwright

    (tmp_path / "init.csv").write_text(FUNDING)
    port, web = free_port(), free_port()
    process, _ = start_serve("--init", "init.csv", "--journal", "j", "--port", str(port),
                             "--always-open", "--web", str(web), cwd=tmp_path)
    try:
        logins = json.loads((tmp_path / "j" / "credentials.json").read_text())
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium), args=args)
            context = browser.new_context(
                http_credentials={"username": "bob", "password": logins["bob"]})
            pages = {}
            for name, path in (("market", "/market/CEA25"), ("account", "/account")):
                page = pages[name] = context.new_page()
                assert page.goto(f"http://127.0.0.1:{web}{path}").status == 200
                page.wait_for_function("window.did_handshake === true", timeout=10_000)
            with ThreadPoolExecutor(1) as bots:  # Playwright's loop holds this thread
                sold, bought = bots.submit(trade, port, logins).result(timeout=60)
            # alice sold 100 at 60.00, bob bought them
            assert sold["report"] == bought["report"] == "accepted"
            row = pages["market"].get_by_test_id("tape").locator("tbody tr").first
            expect(row).to_contain_text("60.00", timeout=1_000)
            expect(row).to_contain_text("100")
            holding = pages["account"].get_by_test_id("holdings").locator("tbody tr",
                                                                          has_text="CEA25")
            expect(holding).to_contain_text("100", timeout=1_000)
            refused = context.new_page().goto(f"http://127.0.0.1:{web}/account/alice")
            assert refused is not None and refused.status == 403
            browser.close()
    finally:
        code, err = stop(process)
    assert code == 0, err
