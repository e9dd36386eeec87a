"""Fixtures of the console's browser tests: a real `kokuho-ledger serve` on a fresh embedded
database, named tokens per role, residents recorded through the HTTP API, and Debian's
chromium driven by Playwright. A missing browser fails the run; nothing here skips."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("KOKUHO_BIN", ROOT / "target" / "debug" / "kokuho-ledger"))
CHROMIUM = os.environ.get("KOKUHO_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("KOKUHO_SCREENSHOTS", ROOT / "target" / "console-screenshots"))

# A My Number with a valid check digit: it must never appear on any page but the reveal.
MY_NUMBER = "123456789018"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `serve` process on its own SQLite file."""

    def __init__(self, idle_seconds=900):
        assert BIN.exists(), f"{BIN} is missing: build it first (cargo build)"
        self.dir = Path(tempfile.mkdtemp(prefix="kokuho-browser-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            DATABASE_URL=f"sqlite://{self.dir / 'ledger.db'}",
            KOKUHO_LISTEN=f"127.0.0.1:{self.port}",
            KOKUHO_CONSOLE_IDLE_SECONDS=str(idle_seconds),
            RUST_LOG="info",
        )
        self.env.pop("KOKUHO_OIDC_ISSUER", None)
        self.tokens = {}
        for name, roles in {
            "clerk-tanaka": ["clerk", "my_number"],
            "clerk-suzuki": ["clerk"],
            "rinji-sato": ["inquiry"],
            "kansa-ito": ["auditor"],
        }.items():
            self.tokens[name] = self.create_token(name, roles)
        self.log = open(self.dir / "serve.log", "w")
        self.proc = subprocess.Popen([str(BIN), "serve"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1)
                return
            except (urllib.error.URLError, ConnectionError):
                assert self.proc.poll() is None, (self.dir / "serve.log").read_text()
                time.sleep(0.1)
        raise AssertionError("the server did not start")

    def create_token(self, name, roles):
        args = [str(BIN), "token", "create", "--name", name]
        for r in roles:
            args += ["--role", r]
        out = subprocess.run(args, env=self.env, check=True, capture_output=True, text=True).stdout
        return out.strip().splitlines()[-1]

    def api(self, method, path, body=None, token="clerk-tanaka"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.tokens[token]}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def event(self, person_id, body):
        status, answer = self.api("POST", f"/v1/persons/{person_id}/events", body)
        assert status == 201, (status, answer)
        return answer

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def seed(server):
    """Residents: 1001 with two insured periods, 1002 insured (household 500, with a My
    Number), 1003 with a DV restriction."""
    reg = lambda pid, name, kana, birth, **extra: server.event(pid, {
        "type": "registered", "effective_date": birth, "reported_date": birth, "name": name,
        "name_kana": kana, "birth_date": birth, "sex": "1", "sex_on_back": False, **extra})
    reg("1001", "山田 太郎", "ヤマダ　タロウ", "1980-04-01")
    server.event("1001", {"type": "moved_in", "effective_date": "2010-04-01", "reported_date": "2010-04-05",
                          "from": "other_prefecture", "household_id": "500"})
    server.event("1001", {"type": "moved_out", "effective_date": "2015-06-01", "reported_date": "2015-06-01",
                          "to": "other_prefecture"})
    server.event("1001", {"type": "moved_in", "effective_date": "2020-01-10", "reported_date": "2020-03-05",
                          "from": "abroad", "household_id": "500"})
    reg("1002", "山田 花子", "ヤマダ　ハナコ", "1982-07-07", my_number=MY_NUMBER)
    server.event("1002", {"type": "moved_in", "effective_date": "2020-01-10", "reported_date": "2020-01-10",
                          "from": "abroad", "household_id": "500"})
    reg("1003", "佐藤 次郎", "サトウ　ジロウ", "1975-02-03")
    server.event("1003", {"type": "moved_in", "effective_date": "2018-05-01", "reported_date": "2018-05-01",
                          "from": "same_prefecture", "household_id": "600"})
    server.event("1003", {"type": "disclosure_restricted", "effective_date": "2019-01-01", "reported_date": "2019-01-01"})


@pytest.fixture(scope="session")
def server():
    s = Server()
    seed(s)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser():
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="ja-JP", timezone_id="Asia/Tokyo", viewport={"width": 1280, "height": 900})
    p = context.new_page()
    yield p
    context.close()


def sign_in(page, server, name, path="/console/search"):
    page.goto(server.base + path)
    assert "/console/sign-in" in page.url
    page.get_by_test_id("token").fill(server.tokens[name])
    page.get_by_test_id("sign-in").click()
    page.wait_for_load_state()
    assert "/console/sign-in" not in page.url, page.content()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
