"""The dashboard at /ui/ in a real headless Chromium (Debian's, driven by selenium): it loads
without console errors under its Content-Security-Policy, the admin sees the topology (sites,
L0s, the L1s on them, a host out of sync), a reservation made through the API appears within 2 s
from the event stream, a tenant's description holding markup shows as text, a tenant sees only
its own. The screenshots in docs/ are this test's.

Chromium is not optional here: ``make test`` installs it (scripts/install-deps.sh), so a machine
without it fails this test rather than skipping it."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from iris_haas.api.client import ApiError
from iris_haas.api.service import LocalCoordinator
from iris_haas.contract.ops import L1Op
from iris_haas.control.sync import InMemoryDataPlane
from tests.conftest import MemoryAgents

pytestmark = pytest.mark.unit

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DOCS = Path(__file__).resolve().parents[2] / "docs"
HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> evil & co'


class OneHostDown(InMemoryDataPlane):
    """Every host takes its state but ``l0-1``, which does not answer: it stays out of sync."""

    def push(self, host, agent_url, state):
        if host == "l0-1":
            raise ConnectionRefusedError(f"{host}: connection refused")
        return super().push(host, agent_url, state)

    def observe(self, host, agent_url):
        if host == "l0-1":
            raise ConnectionRefusedError(f"{host}: connection refused")
        return super().observe(host, agent_url)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with LocalCoordinator(tmp_path_factory.mktemp("ui"), dataplane=OneHostDown(), events_heartbeat_s=1.0, events_stream_s=2.0,
                          push_timeout_s=0.5, provision_timeout_s=1.0) as c:
        admin = c.client(c.admin_token)
        admin.post("/sites", {"name": "haas"})
        for name in ("l0-0", "l0-1"):
            admin.post("/nodes", {"name": name, "site": "haas", "cpus": 2, "memory_mb": 8192, "disk_gb": 100})
        admin.post("/gateways", {"name": "gw-haas", "site": "haas", "underlay_address": "198.18.0.1"})
        tokens = {n: admin.post("/tenants", {"name": n})["token"] for n in ("acme", "bob")}
        acme = c.client(tokens["acme"])
        acme.post("/sites", {"name": "acme-dc", "gateway_underlay": "198.51.100.7"})
        admin.post("/links", {"name": "wan-acme", "site_a": "haas", "site_b": "acme-dc", "capacity_mbps": 1000})
        # three L1s: two fill l0-0, the third lands on l0-1, whose agent does not answer
        first = acme.post("/reservations", {"description": "peak offload", "duration_s": 7200, "items": [
            {"kind": "compute", "count": 3}, {"kind": "network", "bandwidth_mbps": 200}]})["id"]
        acme.post(f"/reservations/{first}/commit")
        with pytest.raises(ApiError) as e:
            acme.post(f"/reservations/{first}/provision")
        assert e.value.type == "DataPlaneError", e.value
        bob = c.client(tokens["bob"])
        later = bob.post("/reservations", {"description": "bob's nightly batch", "start": _iso(time.time() + 5400),
                                           "duration_s": 3600, "items": [{"kind": "compute", "count": 1}]})["id"]
        bob.post(f"/reservations/{later}/commit")
        yield c, tokens, {"first": first, "later": later}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@pytest.fixture
def browser():
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "chromium and chromium-driver are not installed (make test " \
                                                        "installs them: scripts/install-deps.sh)"
    profile = tempfile.mkdtemp(prefix="iris-ui-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    # --no-sandbox: Chromium refuses its sandbox as root, and a container without user
    # namespaces cannot give it one; the page is this test's own, on loopback
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1400,1050", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def sign_in(driver, url: str, token: str) -> None:
    driver.get(url + "/")  # redirected to /ui/
    assert driver.current_url == url + "/ui/"
    field = WebDriverWait(driver, 10).until(EC.visibility_of_element_located((By.ID, "token")))
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#signin button[type=submit]").click()
    WebDriverWait(driver, 10).until(EC.text_to_be_present_in_element((By.ID, "stream-state"), "live"))
    assert not driver.find_element(By.ID, "signin").is_displayed()


LOOK = """return [...document.querySelectorAll(arguments[0])].map(e => ({
    text: e.innerText, cls: e.className, data: {...e.dataset}, x: e.getBoundingClientRect().x}))"""


def look(driver, css: str) -> list[dict]:
    """What the elements matching ``css`` show, read in one go: the page re-renders as events come."""
    return driver.execute_script(LOOK, css)


def wait_for(driver, css: str, timeout: float = 10.0) -> list[dict]:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: look(d, css) or False)


def test_the_ui_is_static_files_under_a_strict_policy(served):
    c, tokens, _ = served
    for path in ("/ui/", "/ui/app.js", "/ui/style.css"):
        r = httpx.get(c.url + path)
        assert r.status_code == 200, path
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "javascript" in httpx.get(c.url + "/ui/app.js").headers["content-type"]
    for method in ("GET", "HEAD"):
        assert httpx.request(method, c.url + "/", follow_redirects=False).headers["location"] == "/ui/"
    page = httpx.get(c.url + "/ui/").text
    assert "<script type=\"module\" src=\"app.js\"></script>" in page and "http" not in page.lower()
    # the token is checked as the API checks it
    assert httpx.get(c.url + "/ui/whoami").status_code == 401
    assert httpx.get(c.url + "/ui/whoami", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(c.url + "/ui/whoami", headers={"Authorization": f"Bearer {c.admin_token}"}).json() == {
        "admin": True, "tenant": None}
    assert httpx.get(c.url + "/ui/whoami", headers={"Authorization": f"Bearer {tokens['acme']}"}).json() == {
        "admin": False, "tenant": "acme"}


def test_the_admin_sees_the_topology_and_live_reservations(served, browser):
    c, tokens, rids = served
    sign_in(browser, c.url, c.admin_token)
    assert "token" not in browser.current_url.lower() and c.admin_token not in browser.current_url
    # topology: the HaaS site with its gateway and L0s, the tenant's IaaS site, the link
    for node in ("l0-0", "l0-1"):
        wait_for(browser, f'#sites [data-site="haas"] [data-node="{node}"]')
    assert wait_for(browser, '#sites [data-site="acme-dc"] h3')[0]["text"] == "acme-dc"
    assert wait_for(browser, '[data-gateway="gw-haas"] [data-sync]')[0]["data"]["sync"] == "in"
    assert look(browser, '[data-node="l0-0"] [data-sync]')[0]["data"]["sync"] == "in"
    down = look(browser, '[data-node="l0-1"]')[0]
    assert "out-of-sync" in down["cls"] and "connection refused" in down["text"]
    assert look(browser, '[data-node="l0-1"] [data-sync]')[0]["data"]["sync"] == "out"
    # the first reservation's L1s on their L0s: two on l0-0, one on l0-1
    on = {n: look(browser, f'[data-node="{n}"] .l1[data-reservation="{rids["first"]}"]') for n in ("l0-0", "l0-1")}
    assert (len(on["l0-0"]), len(on["l0-1"])) == (2, 1)
    link = look(browser, '#links tr[data-link="wan-acme"]')[0]["text"]
    assert "haas ↔ acme-dc" in link and "1000 Mbit/s" in link and "200 Mbit/s" in link

    # a reservation made now, through the API, shows within 2 s: the stream brought it (a stream
    # lasts 2 s here: the page has opened it again, after the last event it had, meanwhile)
    WebDriverWait(browser, 10, poll_frequency=0.05).until(
        lambda d: int(look(d, "#stream-state")[0]["data"].get("opened", 0)) >= 2)
    acme = c.client(tokens["acme"])
    t0 = time.monotonic()
    rid = acme.post("/reservations", {"description": HOSTILE, "duration_s": 3600,
                                      "items": [{"kind": "compute", "count": 1}]})["id"]
    row = f'#reservations tr[data-reservation="{rid}"]'
    wait_for(browser, row, timeout=2.0)
    assert time.monotonic() - t0 < 2.0
    assert look(browser, f"{row} .id")[0]["text"] == rid
    # the hostile description is text: shown as written, nothing of it ran or became an element
    assert look(browser, f"{row} .description")[0]["text"] == HOSTILE
    assert browser.execute_script("return window.pwned") is None
    assert not look(browser, "main img, main script")
    wait_for(browser, f'#feed li[data-reservation="{rid}"]')
    assert look(browser, row)[0]["text"].split("\t")[3] == "ReserveHeld"
    acme.post(f"/reservations/{rid}/commit")  # the row follows: held, then committed
    WebDriverWait(browser, 2.0, poll_frequency=0.05).until(
        lambda d: look(d, row)[0]["text"].split("\t")[3] == "ReserveStart")
    browser.save_screenshot(str(DOCS / "ui-topology.png"))

    # the calendar: a bar per reservation on each L0's and link's row; the now line
    browser.find_element(By.CSS_SELECTOR, '#views button[data-view="timeline"]').click()
    bars = {(b["data"]["row"], b["data"]["reservation"]) for b in look(browser, "#calendar .cal-bar")}
    assert {("node:l0-0", rids["first"]), ("node:l0-1", rids["first"]), ("link:wan-acme", rids["first"])} <= bars
    assert any(r == rid for _, r in bars) and any(r == rids["later"] for _, r in bars)
    now = look(browser, "#calendar .cal-now")
    assert len(now) == 1
    later = look(browser, f'.cal-bar[data-reservation="{rids["later"]}"]')[0]
    first = look(browser, f'.cal-bar[data-reservation="{rids["first"]}"]')[0]
    assert first["x"] < now[0]["x"] < later["x"]  # started a moment ago; starts in 90 minutes
    browser.save_screenshot(str(DOCS / "ui-timeline.png"))

    browser.find_element(By.CSS_SELECTOR, '#views button[data-view="live"]').click()
    assert browser.find_element(By.CSS_SELECTOR, f'#feed li[data-reservation="{rid}"]').is_displayed()
    # the page loaded nothing but its own origin's files and API
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(u.startswith(c.url + "/") for u in loaded), loaded
    # each event once, newest first: reconnecting resumed after the last one, it replayed nothing
    cursors = [int(e["data"]["cursor"]) for e in look(browser, "#feed li")]
    feed = c.client(c.admin_token).get("/events", params={"limit": 1000})["events"]
    assert cursors == [e["cursor"] for e in reversed(feed)]
    assert console_errors(browser) == []


def test_a_tenant_sees_its_own_and_the_token_stays_in_the_tab(served, browser):
    c, tokens, rids = served
    sign_in(browser, c.url, tokens["bob"])
    assert wait_for(browser, "#who")[0]["text"] == "tenant bob"
    wait_for(browser, f'#reservations tr[data-reservation="{rids["later"]}"]')
    assert not browser.find_elements(By.CSS_SELECTOR, f'[data-reservation="{rids["first"]}"]')
    # no inventory, no hosts for a tenant: the L0 its L1 is on, as its reservation names it
    assert [n["data"]["node"] for n in look(browser, "#sites [data-node]")] == ["l0-1"]
    assert look(browser, '[data-node="l0-1"] .l1')[0]["data"]["reservation"] == rids["later"]
    assert not look(browser, "[data-gateway], [data-sync], #links tbody tr")
    assert console_errors(browser) == []
    assert browser.execute_script("return sessionStorage.getItem('iris-token')") == tokens["bob"]
    assert browser.execute_script("return localStorage.length") == 0 and "bob" not in browser.current_url
    # a reload keeps the tab signed in; signing out forgets the token
    browser.refresh()
    wait_for(browser, f'#reservations tr[data-reservation="{rids["later"]}"]')
    browser.find_element(By.ID, "signout").click()
    assert browser.execute_script("return sessionStorage.getItem('iris-token')") is None
    assert browser.find_element(By.ID, "token").is_displayed()
    # an unknown token is refused in the form (the refused request is the only console error)
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    browser.find_element(By.CSS_SELECTOR, "#signin button[type=submit]").click()
    WebDriverWait(browser, 5).until(EC.text_to_be_present_in_element((By.ID, "signin-error"), "not accepted"))
    errors = console_errors(browser)
    assert len(errors) == 1 and "/ui/whoami" in errors[0]["message"] and "401" in errors[0]["message"], errors


def test_utilization_from_the_agents_metrics(tmp_path, browser):
    dp = MemoryAgents()
    with LocalCoordinator(tmp_path, dataplane=dp, events_heartbeat_s=1.0, events_stream_s=2.0) as c:
        admin = c.client(c.admin_token)
        admin.post("/sites", {"name": "haas"})
        admin.post("/nodes", {"name": "l0-0", "site": "haas", "cpus": 4, "memory_mb": 8192, "disk_gb": 100})
        admin.post("/gateways", {"name": "gw-haas", "site": "haas", "underlay_address": "198.18.0.1"})
        tokens = {}
        for i, name in enumerate(("acme", "bob")):
            tokens[name] = admin.post("/tenants", {"name": name})["token"]
            t = c.client(tokens[name])
            t.post("/sites", {"name": f"{name}-dc", "gateway_underlay": f"198.18.0.{11 + i}"})
            admin.post("/links", {"name": f"wan-{name}", "site_a": "haas", "site_b": f"{name}-dc", "capacity_mbps": 100})
            r = t.post("/reservations", {"duration_s": 3600, "items": [{"kind": "compute", "count": 1}]})
            t.post(f"/reservations/{r['id']}/commit")
            assert t.post(f"/reservations/{r['id']}/provision")["provision_state"] == "Provisioned"
        l1s = {o.tenant: o for o in dp.states["l0-0"].ops if isinstance(o, L1Op)}
        host = dp.memory["l0-0"]
        acme = l1s["acme"]
        host.use(acme.name, cpu_seconds=10.0, memory_bytes=256 << 20)
        host.count(acme.port, rx_bytes=1000, tx_bytes=500)

        sign_in(browser, c.url, c.admin_token)
        browser.find_element(By.CSS_SELECTOR, '#views button[data-view="utilization"]').click()
        row = f'#util-l1s tr[data-l1="{acme.name}"]'
        assert "256.0 MiB" in wait_for(browser, row)[0]["text"]
        wait_for(browser, f'#util-l1s tr[data-l1="{l1s["bob"].name}"]')  # the admin sees every tenant's
        port = f'#util-ports tr[data-port="{acme.port}"][data-host="l0-0"]'
        assert look(browser, f"{port} .rx")[0]["data"]["bytes"] == "1000"
        # the L1 works and sends: the next reading shows the rates of the change
        host.use(acme.name, cpu_seconds=15.0, memory_bytes=300 << 20)
        host.count(acme.port, rx_bytes=5_000_000)
        WebDriverWait(browser, 12, poll_frequency=0.1).until(
            lambda d: look(d, f"{port} .rx")[0]["data"]["bytes"] == "5001000")
        cells = look(browser, f"{port} .rx-rate, {row} .cpu")
        assert all(x["text"] != "—" for x in cells), cells
        assert "Mbit/s" in look(browser, f"{port} .rx-rate")[0]["text"]
        assert "%" in look(browser, f"{row} .cpu")[0]["text"]
        browser.save_screenshot(str(DOCS / "ui-utilization.png"))
        assert console_errors(browser) == []

        # a tenant sees its own L1s and ports only
        browser.find_element(By.ID, "signout").click()
        sign_in(browser, c.url, tokens["bob"])
        browser.find_element(By.CSS_SELECTOR, '#views button[data-view="utilization"]').click()
        wait_for(browser, f'#util-l1s tr[data-l1="{l1s["bob"].name}"]')
        assert {x["text"].split("\t")[1] for x in look(browser, "#util-l1s tr[data-l1]")} == {"bob"}
        tenants = {x["text"].split("\t")[2] for x in wait_for(browser, "#util-ports tr[data-port]")}
        assert tenants == {"bob"}
        assert console_errors(browser) == []
