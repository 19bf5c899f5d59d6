"""The web console in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium without downloading anything): sign
in with the key pair and with a one-time link from `nimbus console`, see a
function deployed through boto3, invoke it from the page, watch its log
line arrive live; everything a function controls shown as text; and
unauthenticated and cross-site requests refused.

Set NIMBUS_CONSOLE_SCREENSHOTS to a directory to save the pages' pictures
(the README's come from `docs/`)."""

import http.client
import http.server
import json
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import BIN, ROLE, Server, aws_client, create, function_log, make_zip, nimbus_cli, send, unique_name, wait_for

# Prints a line with markup in it, and answers with markup: both must reach
# the page as text.
APP = r'''
import json

def handler(event, context):
    print("CONSOLE-LINE <script>window.pwned=1</script><img src=x onerror=window.pwned=2>", event.get("n"))
    return {"echo": event, "html": "<b id=injected>bold</b>"}
'''

SHOTS = os.environ.get("NIMBUS_CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A node of its own, so that the functions list holds only this file's functions."""
    s = Server(tmp_path_factory.mktemp("console") / "data").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert exe and driver, "Debian's chromium and chromium-driver are missing (scripts/test installs them)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-proxy-server", "--disable-background-networking", "--disable-component-update",
                "--disable-extensions", f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    d.set_window_size(1440, 1000)
    yield d
    d.quit()


def until(driver, condition, what, timeout=20):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=f"timed out waiting for {what}")


def css(driver, selector):
    return driver.find_elements(By.CSS_SELECTOR, selector)


# Read in one script call: the page redraws its parts as data arrives, and
# an element found in one call may be replaced before the next reads it.
def text_of(driver, selector):
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
                                 selector)


def chart_total(driver, chart):
    total = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute('data-total')", f"#chart-{chart}")
    return float(total) if total is not None else None


def shot(driver, name):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"console-{name}.png"))


def signed_out(driver, node):
    """Opens the console with no session."""
    driver.get(node.endpoint + "/console/")
    driver.delete_all_cookies()
    driver.get("about:blank")
    driver.get(node.endpoint + "/console/")
    until(driver, lambda d: css(d, "#login"), "the sign-in form")


def sign_in_with_keys(driver, node, key=None, secret=None):
    signed_out(driver, node)
    k, s = node.credentials()
    driver.find_element(By.ID, "access-key-id").send_keys(key or k)
    driver.find_element(By.ID, "secret-access-key").send_keys(secret or s)
    driver.find_element(By.ID, "sign-in").click()


def session_cookie(node):
    """Signs in over HTTP as the page does; returns the Cookie header."""
    k, s = node.credentials()
    status, headers, _ = send("POST", node.endpoint + "/console/api/login",
                              json.dumps({"accessKeyId": k, "secretAccessKey": s}).encode(),
                              {"Content-Type": "application/json", "Origin": node.endpoint})
    assert status == 200
    cookie = headers["Set-Cookie"]
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=43200"):
        assert attr in cookie, cookie
    return cookie.split(";")[0]


def deploy(node, name, **kw):
    lam = node.client()
    create(lam, name, make_zip({"app.py": APP}), Timeout=30, **kw)
    return lam


def test_sign_in_deploy_invoke_and_watch_the_log_live(node, browser):
    d = browser
    sign_in_with_keys(d, node, secret="not-the-secret")
    until(d, lambda d: "not this node" in text_of(d, "#login-error"), "the refusal of a wrong secret")
    shot(d, "login")

    sign_in_with_keys(d, node)
    until(d, lambda d: css(d, "#functions") or css(d, "main p.muted"), "the functions list")
    name = unique_name("console")
    deploy(node, name, Description="<i>described</i>",
           Environment={"Variables": {"GREETING": "<script>window.pwned=3</script>"}}, MemorySize=256)
    d.get(node.endpoint + "/console/#/")
    d.refresh()
    row = until(d, lambda d: css(d, f'tr[data-name="{name}"]'), "the deployed function in the list")[0]
    assert "python3.11" in row.text and "256 MB" in row.text and "Active" in row.text and "never" in row.text

    row.find_element(By.CSS_SELECTOR, "a.fn-link").click()
    until(d, lambda d: text_of(d, "#function-name") == name, "the function's page")
    assert "<i>described</i>" in text_of(d, "main dl"), "markup in the description is shown as text"
    assert "GREETING=<script>window.pwned=3</script>" in text_of(d, "main dl")
    # Live logs follow from the moment the stream says it is ready.
    until(d, lambda d: css(d, "#live-status[data-ready]"), "the live log stream")
    until(d, lambda d: chart_total(d, "invocations") == 0, "the empty invocations chart")

    editor = d.find_element(By.ID, "event")
    editor.clear()
    editor.send_keys('{"n": 7, "text": "<img src=x onerror=window.pwned=4>"}')
    d.find_element(By.ID, "invoke").click()
    until(d, lambda d: text_of(d, "#report").startswith("REPORT RequestId:"), "the REPORT line")
    result = json.loads(text_of(d, "#result"))
    assert result == {"echo": {"n": 7, "text": "<img src=x onerror=window.pwned=4>"},
                      "html": "<b id=injected>bold</b>"}
    assert "CONSOLE-LINE <script>" in text_of(d, "#invoke-log")
    assert "Succeeded" in text_of(d, "#invoke-status")

    line = until(d, lambda d: [li for li in css(d, "#live-log li") if "CONSOLE-LINE" in li.text],
                 "the log line in the live view")[0]
    assert "<script>window.pwned=1</script><img src=x onerror=window.pwned=2> 7" in line.text
    # Nothing the function wrote became markup or ran.
    assert not css(d, "#live-log script, #live-log img, #result b, #injected")
    assert d.execute_script("return window.pwned === undefined")
    # The charts are redrawn after the invoke, from the CloudWatch metrics engine.
    until(d, lambda d: chart_total(d, "invocations") == 1, "the invocation in the chart")
    until(d, lambda d: chart_total(d, "cold-starts") == 1, "the cold start in the chart")
    assert chart_total(d, "errors") == 0
    assert css(d, "#chart-duration path.line"), "the p50 line is drawn"
    d.set_window_size(1440, 2000)
    shot(d, "function")
    d.set_window_size(1440, 1000)

    d.get(node.endpoint + "/console/#/usage")
    until(d, lambda d: css(d, "#usage"), "the usage page")
    assert text_of(d, "#usage-requests") == "1"
    assert name in text_of(d, "#usage") and "$" in text_of(d, "#usage")
    shot(d, "usage")

    d.get(node.endpoint + "/console/#/")
    row = until(d, lambda d: css(d, f'tr[data-name="{name}"]'), "the list")[0]
    until(d, lambda d: "s ago" in css(d, f'tr[data-name="{name}"]')[0].text, "the last invoke in the list")
    shot(d, "functions")

    # The recent invocations on the function's page come from the metering records.
    d.get(node.endpoint + f"/console/#/functions/{name}")
    until(d, lambda d: "success" in text_of(d, "#recent"), "the invocation in the recent list")

    # The deployment package downloads through the session.
    cookie = session_cookie(node)
    status, headers, body = send("GET", node.endpoint + f"/console/api/functions/{name}/code", headers={"Cookie": cookie})
    assert status == 200 and headers["Content-Type"] == "application/zip" and body.startswith(b"PK")

    d.find_element(By.ID, "sign-out").click()
    until(d, lambda d: css(d, "#login"), "the sign-in form after signing out")
    status, _, _ = send("GET", node.endpoint + "/console/api/functions", headers={"Cookie": cookie})
    assert status == 200, "another session lives on"


def live_lines(driver):
    return driver.execute_script("return [...document.querySelectorAll('#live-log li')].map((li) => li.innerText)")


def test_a_busy_functions_page_keeps_up(node, browser):
    name = unique_name("console-busy")
    lam = node.client()
    create(lam, name, make_zip({"app.py": CHATTY}), Timeout=30)
    d = browser
    sign_in_with_keys(d, node)
    until(d, lambda d: css(d, "#sign-out"), "the console")
    d.get(node.endpoint + f"/console/#/functions/{name}")
    until(d, lambda d: css(d, "#live-status[data-ready]"), "the live log stream")
    # Thousands of lines at once: the view keeps the last 1,000, the newest last.
    lam.invoke(FunctionName=name, Payload=json.dumps({"lines": 3000}).encode())
    until(d, lambda d: any("line 02999" in line for line in live_lines(d)), "the last of 3,000 lines", timeout=60)
    assert len(live_lines(d)) <= 1000

    # The charts are redrawn while the function stays busy, not only once it rests.
    stop = threading.Event()

    def load():
        while not stop.is_set():
            lam.invoke(FunctionName=name, Payload=b"{}")
            stop.wait(0.05)  # the load's pace: well over one REPORT line each 250 ms

    busy = threading.Thread(target=load)
    busy.start()
    try:
        until(d, lambda d: (chart_total(d, "invocations") or 0) >= 10, "the chart to count the load", timeout=60)
    finally:
        stop.set()
        busy.join()

    # A hidden tab gives its stream (one of the browser's six connections to the host) up, and follows again once shown.
    visible = "const hidden = arguments[0]; Object.defineProperty(document, 'hidden', {configurable: true, get: () => hidden});" \
              "document.dispatchEvent(new Event('visibilitychange'))"
    d.execute_script(visible, True)
    until(d, lambda d: text_of(d, "#live-status") == "paused while the tab is hidden", "the stream given up")
    assert not css(d, "#live-status[data-ready]")
    d.execute_script(visible, False)
    until(d, lambda d: css(d, "#live-status[data-ready]"), "the stream followed again")
    assert not any("line 00000 " in line for line in live_lines(d)), "the first run's first line is long scrolled out"
    lam.invoke(FunctionName=name, Payload=json.dumps({"lines": 1}).encode())
    until(d, lambda d: any("line 00000 " in line for line in live_lines(d)), "a line after the tab was shown again")


def test_a_login_link_signs_in_once(node, browser):
    d = browser
    out = nimbus_cli(node, "console").stdout.strip()
    assert out.startswith(node.endpoint + "/console/#link="), out
    signed_out(d, node)
    d.get(out)
    until(d, lambda d: css(d, "#sign-out"), "the console after following the link")
    assert "#link=" not in d.current_url, "the spent link is removed from the address bar"
    # The same link again, without the session it made: refused.
    signed_out(d, node)
    d.get(out)
    until(d, lambda d: "not valid" in text_of(d, "#login-error"), "the refusal of a used link")
    assert not css(d, "#sign-out")


def test_a_login_link_needs_the_node_key(node):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDSOMEONEELSE00000", AWS_SECRET_ACCESS_KEY="x" * 40,
               AWS_REGION="us-east-1")
    r = subprocess.run([BIN, "console", "--endpoint", node.endpoint], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode != 0 and "UnrecognizedClientException" in r.stderr, r.stderr
    assert "/console/" not in r.stdout


def test_nothing_is_served_without_a_session(node):
    name = unique_name("console-anon")
    deploy(node, name)
    for path in ("functions", f"functions/{name}", f"functions/{name}/code", f"functions/{name}/logs", "session"):
        for cookie in (None, "nimbus_console=" + "0" * 64):
            status, headers, body = send("GET", f"{node.endpoint}/console/api/{path}",
                                         headers={"Cookie": cookie} if cookie else {})
            assert status == 401, (path, cookie, status)
            assert name.encode() not in body
    status, _, _ = send("POST", f"{node.endpoint}/console/api/functions/{name}/invoke", b'{"payload": "{}"}',
                        {"Content-Type": "application/json", "Origin": node.endpoint})
    assert status == 401


CHATTY = r'''
def handler(event, context):
    for i in range(event.get("lines", 0)):
        print(f"line {i:05d} " + "x" * 90)
    return len(event.get("pad", ""))
'''


def test_the_console_reads_and_answers_what_a_request_needs(node):
    name = unique_name("console-sizes")
    lam = node.client()
    create(lam, name, make_zip({"app.py": CHATTY}), Timeout=30)
    json_post = {"Content-Type": "application/json", "Origin": node.endpoint}
    # Sign-in needs no key, so it reads no more than a key pair's worth: 40
    # unfinished 13 MB sign-ins held 500 MB of the node, past --body-budget-mb.
    status, _, answer = send("POST", node.endpoint + "/console/api/login",
                             json.dumps({"accessKeyId": "A" * 5000, "secretAccessKey": "s"}).encode(), json_post)
    assert status == 413, (status, answer)
    # The test panel takes events as Invoke does: 6 MB at most, and one past it never runs.
    cookie = session_cookie(node)
    invoke = f"{node.endpoint}/console/api/functions/{name}/invoke"
    pad = "x" * (6 * 1024 * 1024 - 20)
    status, _, answer = send("POST", invoke, json.dumps({"payload": json.dumps({"pad": pad})}).encode(),
                             {**json_post, "Cookie": cookie})
    assert status == 200 and json.loads(answer)["payload"] == str(len(pad)), (status, answer[:200])
    status, headers, answer = send("POST", invoke, json.dumps({"payload": json.dumps({"pad": pad + "x" * 40})}).encode(),
                                   {**json_post, "Cookie": cookie})
    assert (status, headers["x-amzn-ErrorType"]) == (413, "RequestEntityTooLargeException"), (status, answer[:200])
    assert json.loads(answer)["message"] == "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
    starts = wait_for(lambda: [e for e in function_log(node, name) if e["message"].startswith("START")], "the invoke")
    assert len(starts) == 1, starts
    # Its log is the last 4 KB of whole lines, as LogType=Tail gives; the REPORT line is whole.
    status, _, answer = send("POST", invoke, json.dumps({"payload": '{"lines": 2000}'}).encode(),
                             {**json_post, "Cookie": cookie})
    r = json.loads(answer)
    assert status == 200 and r["logTruncated"] is True
    assert len("\n".join(r["log"]).encode()) <= 4096 and r["log"][0].startswith(("line ", "END", "REPORT"))
    assert any(line.startswith("line 01999 ") for line in r["log"]) and r["report"].startswith("REPORT RequestId:")
    status, _, answer = send("POST", invoke, json.dumps({"payload": '{"lines": 3}'}).encode(),
                             {**json_post, "Cookie": cookie})
    r = json.loads(answer)
    assert r["logTruncated"] is False and r["log"][-1].startswith("REPORT"), r["log"]
    assert [line[:10] for line in r["log"] if line.startswith("line ")] == ["line 00000", "line 00001", "line 00002"]


def test_the_page_runs_only_the_script_it_names(node):
    nonces = []
    for _ in range(2):
        status, headers, page = send("GET", f"{node.endpoint}/console/")
        assert status == 200
        csp = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
        nonce = csp["script-src"].removeprefix("'nonce-").removesuffix("'")
        assert csp["script-src"] == csp["style-src"] == f"'nonce-{nonce}'" and len(nonce) >= 22
        assert f'<script src="/console/app.js" nonce="{nonce}" defer>'.encode() in page
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


def test_a_forged_cookie_of_the_same_name_does_not_sign_the_operator_out(node):
    name = unique_name("console-two-cookies")
    deploy(node, name)
    cookie = session_cookie(node)
    # As a browser sends them: a cookie set for a longer path comes first.
    status, headers, body = send("GET", f"{node.endpoint}/console/api/functions/{name}/code",
                                 headers={"Cookie": f"nimbus_console=forged; {cookie}"})
    assert status == 200 and body.startswith(b"PK")
    # Nothing of a session's is for a cache to keep.
    assert headers["Cache-Control"] == "no-store"


def test_signing_out_ends_the_live_logs(node):
    name = unique_name("console-out")
    lam = deploy(node, name)
    cookie = session_cookie(node)
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    conn.request("GET", f"/console/api/functions/{name}/logs", headers={"Cookie": cookie})
    stream = conn.getresponse()
    assert stream.status == 200 and stream.getheader("Content-Type") == "text/event-stream"
    assert stream.readline() == b"event: ready\n"
    stream.readline(), stream.readline()
    lam.invoke(FunctionName=name, Payload=b"{}")
    seen = b""
    while b"REPORT" not in seen:
        seen += stream.readline()
    assert stream.readline() == b"\n", "the end of the REPORT line's event"
    status, _, _ = send("POST", node.endpoint + "/console/api/logout", b"{}",
                        {"Cookie": cookie, "Content-Type": "application/json", "Origin": node.endpoint})
    assert status == 200
    lam.invoke(FunctionName=name, Payload=b"{}")
    # The next lines find the session gone: the stream ends instead.
    assert stream.read() == b""
    conn.close()
    status, _, _ = send("GET", node.endpoint + "/console/api/functions", headers={"Cookie": cookie})
    assert status == 401


def test_cross_site_requests_are_refused(node):
    name = unique_name("console-csrf")
    deploy(node, name)
    cookie = session_cookie(node)
    invoke = f"{node.endpoint}/console/api/functions/{name}/invoke"
    body = b'{"payload": "{\\"n\\": 1}"}'
    own = {"Cookie": cookie, "Content-Type": "application/json", "Origin": node.endpoint}
    refused = [
        {**own, "Origin": "http://evil.example"},
        {**own, "Origin": "null"},
        {k: v for k, v in own.items() if k != "Origin"},
        {**own, "Sec-Fetch-Site": "cross-site"},
        {**own, "Sec-Fetch-Site": "same-site"},
        {**own, "Content-Type": "text/plain"},
    ]
    for headers in refused:
        status, _, answer = send("POST", invoke, body, headers)
        assert status == 403, (headers, status, answer)
    status, _, answer = send("GET", f"{node.endpoint}/console/api/functions",
                             headers={"Cookie": cookie, "Sec-Fetch-Site": "cross-site"})
    assert status == 403
    # Login itself is refused from another origin (login CSRF).
    k, s = node.credentials()
    status, headers, _ = send("POST", node.endpoint + "/console/api/login",
                              json.dumps({"accessKeyId": k, "secretAccessKey": s}).encode(),
                              {"Content-Type": "application/json", "Origin": "http://evil.example"})
    assert status == 403 and "Set-Cookie" not in headers
    # The same request from the console's own origin runs, once: none of the refused ones did.
    status, _, answer = send("POST", invoke, body, own)
    assert status == 200 and json.loads(answer)["report"].startswith("REPORT")
    starts = wait_for(lambda: [e for e in function_log(node, name) if e["message"].startswith("START")], "the invoke")
    assert len(starts) == 1, starts


# A page of another origin (same site: 127.0.0.1 on another port, so
# SameSite alone would let the cookie through) that tries to invoke a
# function through the console API with the browser's session.
EVIL = """<!doctype html><title>evil</title><pre id=out></pre><script>
(async () => {
  const url = %s, out = {};
  try {
    await fetch(url, {method: "POST", mode: "no-cors", credentials: "include", body: '{"payload": "{}"}'});
    out.simple = "sent";
  } catch (e) { out.simple = e.name; }
  try {
    const r = await fetch(url, {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: '{"payload": "{}"}'});
    out.json = r.status;
  } catch (e) { out.json = e.name; }
  try {
    const r = await fetch(%s, {credentials: "include"});
    out.read = r.status;
  } catch (e) { out.read = e.name; }
  document.getElementById("out").textContent = JSON.stringify(out);
})();
</script>"""


def test_a_page_of_another_origin_cannot_use_the_session(node, browser):
    name = unique_name("console-evil")
    deploy(node, name)
    d = browser
    sign_in_with_keys(d, node)
    until(d, lambda d: css(d, "#sign-out"), "the console")
    page = (EVIL % (json.dumps(f"{node.endpoint}/console/api/functions/{name}/invoke"),
                    json.dumps(f"{node.endpoint}/console/api/functions"))).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        d.get(f"http://127.0.0.1:{httpd.server_port}/")
        out = json.loads(until(d, lambda d: text_of(d, "#out"), "the other page's attempts"))
    finally:
        httpd.shutdown()
        httpd.server_close()
    # The simple POST is sent, and its answer withheld from the page
    # (Cross-Origin-Resource-Policy); the JSON one fails its preflight; the read is not the page's to see.
    assert out == {"simple": "TypeError", "json": "TypeError", "read": "TypeError"}, out
    # The server refused the one that reached it: a legitimate invoke afterwards is the only one.
    cookie = session_cookie(node)
    status, _, _ = send("POST", f"{node.endpoint}/console/api/functions/{name}/invoke", b'{"payload": "{}"}',
                        {"Cookie": cookie, "Content-Type": "application/json", "Origin": node.endpoint})
    assert status == 200
    starts = wait_for(lambda: [e for e in function_log(node, name) if e["message"].startswith("START")], "the invoke")
    assert len(starts) == 1, starts


# A tenant's page served on the console's own origin: a path-form function
# URL's answer, or an S3 object behind a presigned URL. It tries what a
# same-origin page could: read and drive the console API with the
# operator's session, keep storage of the origin, and put a service worker
# over the whole origin (the function serves one, with the header that lets
# its scope be `/`).
TENANT_PAGE = """<!doctype html><title>tenant</title><pre id=out></pre><script>
(async () => {
  const out = {origin: window.origin};
  try {
    const r = await fetch("/console/api/functions", {credentials: "include"});
    out.read = r.status;
  } catch (e) { out.read = e.name; }
  try {
    const r = await fetch(%s, {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: '{"payload": "{}"}'});
    out.invoke = r.status;
  } catch (e) { out.invoke = e.name; }
  try { localStorage.setItem("k", "v"); out.storage = "kept"; } catch (e) { out.storage = e.name; }
  try {
    await navigator.serviceWorker.register("sw.js", {scope: "/"});
    out.worker = "registered";
  } catch (e) { out.worker = e.name; }
  document.getElementById("out").textContent = JSON.stringify(out);
})();
</script>"""

TENANT_APP = r'''
import json, os

def handler(event, context):
    if event["rawPath"].endswith("/sw.js"):
        return {"statusCode": 200, "body": "self.addEventListener('fetch', () => {});",
                "headers": {"content-type": "text/javascript", "service-worker-allowed": "/"}}
    return {"statusCode": 200, "headers": {"content-type": "text/html"}, "body": os.environ["PAGE"]}
'''


def test_a_tenants_page_on_the_consoles_origin_runs_without_its_privileges(node, browser):
    victim = unique_name("console-victim")
    lam = deploy(node, victim)
    page = TENANT_PAGE % json.dumps(f"/console/api/functions/{victim}/invoke")
    tenant = unique_name("console-tenant")
    create(lam, tenant, make_zip({"app.py": TENANT_APP}), Environment={"Variables": {"PAGE": page}})
    url = lam.create_function_url_config(FunctionName=tenant, AuthType="NONE")["FunctionUrl"]
    lam.add_permission(FunctionName=tenant, StatementId="public", Action="lambda:InvokeFunctionUrl",
                       Principal="*", FunctionUrlAuthType="NONE")
    assert url.startswith(node.endpoint + "/lambda-url/"), url
    s3 = aws_client(node, "s3")
    s3.create_bucket(Bucket="tenant-pages")
    s3.put_object(Bucket="tenant-pages", Key="page.html", Body=page.encode(), ContentType="text/html")
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": "tenant-pages", "Key": "page.html"})

    d = browser
    sign_in_with_keys(d, node)
    until(d, lambda d: css(d, "#sign-out"), "the console")
    for where in (url, presigned):
        d.get(where)
        out = json.loads(until(d, lambda d: text_of(d, "#out"), f"the page's attempts at {where}"))
        # The page's scripts run, in an origin of no one's: the console's
        # answers are not its to read, its JSON post fails the preflight
        # the console never grants, and the origin's storage and service
        # workers are out of its reach.
        assert out["origin"] == "null", out
        assert out["read"] == "TypeError" and out["invoke"] == "TypeError", out
        assert out["storage"] == "SecurityError" and out["worker"] in ("SecurityError", "TypeError"), out
    # The console still works for the operator, with the same session.
    d.get(node.endpoint + "/console/")
    until(d, lambda d: css(d, "#sign-out"), "the console after the tenant's pages")
    # No invoke reached the victim through the console: a legitimate one afterwards is its only one.
    cookie = session_cookie(node)
    status, _, _ = send("POST", f"{node.endpoint}/console/api/functions/{victim}/invoke", b'{"payload": "{}"}',
                        {"Cookie": cookie, "Content-Type": "application/json", "Origin": node.endpoint})
    assert status == 200
    starts = wait_for(lambda: [e for e in function_log(node, victim) if e["message"].startswith("START")], "the invoke")
    assert len(starts) == 1, starts


def test_the_list_of_1000_functions_pages_by_50(tmp_path, browser):
    """Also prints what the browser measured (the figure is a benchmark's, not
    asserted here: `-s` shows it): the list's call and its drawing (what
    grows with the number of functions), and everything since navigation
    (which on a loaded machine is mostly Chromium waiting for a CPU)."""
    s = Server(tmp_path / "data", args=["--prewarm", "0"]).start()
    try:
        lam = s.client(settle=False)
        zip_bytes = make_zip({"app.py": "def handler(e, c):\n    return e\n"})
        names = [f"bulk-{i:04d}" for i in range(1000)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: lam.create_function(FunctionName=n, Runtime="python3.11", Handler="app.handler",
                                                       Role=ROLE, Code={"ZipFile": zip_bytes}), names))
        d = browser
        sign_in_with_keys(d, s)
        until(d, lambda d: css(d, "#functions"), "the list")
        drawn, since_navigation = [], []
        for _ in range(5):
            d.get("about:blank")
            d.get(s.endpoint + "/console/#/")
            until(d, lambda d: d.execute_script("return document.getElementById('main').dataset.readyAt"), "the list")
            main = d.find_element(By.ID, "main")
            drawn.append(int(main.get_attribute("data-load-ms")))
            since_navigation.append(int(main.get_attribute("data-ready-at")))
            assert len(css(d, "#functions tbody tr")) == 50 and css(d, "#next-page")
        drawn.sort()
        since_navigation.sort()
        print(f"console list, 1,000 functions: call and drawing {drawn} ms, since navigation {since_navigation} ms")
        d.find_element(By.ID, "next-page").click()
        until(d, lambda d: css(d, 'tr[data-name="bulk-0050"]'), "the second page")
        d.get(s.endpoint + "/console/#/functions/bulk-0999")
        until(d, lambda d: text_of(d, "#function-name") == "bulk-0999", "a function page")
    finally:
        s.stop()
