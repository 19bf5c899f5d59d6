"""Function URL CORS as a real browser sees it: a headless Chromium loads a
page from another origin (a small server in this test) whose script calls
Nimbus function URLs with `fetch`, allowed and refused, simple and
preflighted, with and without credentials, and posts what it saw back to the
page's server. The function's log then shows which requests reached it:
preflights never do, because the URL front end answers them itself."""

import http.server
import json
import queue
import secrets
import shutil
import subprocess
import threading
import time
from collections import Counter

from conftest import create, function_log, make_zip, unique_name, wait_for

# Logs each invocation (so the test can tell which requests reached the
# function) and answers with two headers: `x-result`, which some URLs'
# ExposeHeaders list, and `x-own`, which the function exposes itself.
APP = r'''
import json

def handler(event, context):
    case = (event.get("queryStringParameters") or {}).get("case", "")
    method = event["requestContext"]["http"]["method"]
    print(f"CORS-CASE {case} {method}")
    return {"statusCode": 200,
            "headers": {"x-result": case, "x-own": "yes", "access-control-expose-headers": "x-own"},
            "body": json.dumps({"method": method, "cookies": event.get("cookies", [])})}
'''

# Runs the cases one after the other and posts the outcomes to its own
# origin: the status and readable headers, or the TypeError a CORS refusal
# raises (fetch gives a script nothing more than that).
PAGE = """<!doctype html>
<title>cors</title>
<script>
const CASES = %s;
async function run(c) {
  try {
    const r = await fetch(c.url, {method: c.method, headers: c.headers, credentials: c.credentials});
    const [result, own] = [r.headers.get("x-result"), r.headers.get("x-own")];
    return {status: r.status, result, own, body: await r.json()};
  } catch (e) {
    return {error: e.name};
  }
}
(async () => {
  const out = {};
  for (const c of CASES) out[c.id] = await run(c);
  await fetch("/report", {method: "POST", body: JSON.stringify(out)});
})();
</script>
"""


def url_with_cors(lam, name, cors, alias=None, auth="NONE"):
    """A URL with this Cors config; a NONE one is open to everyone (the public grant)."""
    q = {"Qualifier": alias} if alias else {}
    url = lam.create_function_url_config(FunctionName=name, AuthType=auth, Cors=cors, **q)["FunctionUrl"]
    if auth == "NONE":
        lam.add_permission(FunctionName=name, StatementId="public", Action="lambda:InvokeFunctionUrl",
                           Principal="*", FunctionUrlAuthType="NONE", **q)
    return url


class PageServer:
    """The other origin: serves the page (and a session cookie, which the
    browser sends to the function URL only with `credentials: "include"`),
    and takes the page's report."""

    def __init__(self, cookie):
        self.cases = []
        reports = self.reports = queue.Queue()
        this = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Set-Cookie", f"{cookie}; Path=/; SameSite=Lax")
                self.end_headers()
                self.wfile.write((PAGE % json.dumps(this.cases)).encode())

            def do_POST(self):
                reports.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def browse(url, reports, tmp_path, timeout=90):
    """Opens `url` in one headless Chromium and returns what the page
    reports, and the console's messages (which say why CORS refused)."""
    exe = shutil.which("chromium")
    assert exe, "the Debian package chromium is missing (scripts/test installs it)"
    log = tmp_path / "chromium.log"
    with open(log, "w") as out:
        # As root Chromium needs --no-sandbox; a fresh profile keeps runs apart,
        # and no proxy or background traffic leaves the machine.
        proc = subprocess.Popen([
            exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run", "--no-proxy-server",
            "--disable-background-networking", "--disable-component-update", "--disable-extensions",
            "--enable-logging=stderr", url], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = reports.get(timeout=0.5)
                break
            except queue.Empty:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the page never reported; Chromium said:\n{log.read_text()[-3000:]}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return report, "\n".join(line for line in log.read_text().splitlines() if "CONSOLE" in line)


REFUSED = {"error": "TypeError"}


def answered(method, result=None, own=None, cookies=()):
    return {"status": 200, "result": result, "own": own, "body": {"method": method, "cookies": list(cookies)}}


def test_cors_from_a_headless_chromium_page_on_another_origin(server, lam, tmp_path):
    name = unique_name("cors")
    create(lam, name, make_zip({"app.py": APP}), Timeout=30)
    version = lam.publish_version(FunctionName=name)["Version"]
    for alias in ("elsewhere", "anyone", "anyonecred", "iam"):
        lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version)
    cookie = f"session={secrets.token_hex(8)}"
    page = PageServer(cookie)
    try:
        urls = {
            # The page's origin among others, with credentials.
            "strict": url_with_cors(lam, name, {
                "AllowOrigins": ["https://other.example", page.origin], "AllowMethods": ["GET", "PUT"],
                "AllowHeaders": ["X-Token"], "ExposeHeaders": ["x-result"], "AllowCredentials": True,
                "MaxAge": 0}),
            # Everything but the page's origin.
            "elsewhere": url_with_cors(lam, name, {
                "AllowOrigins": ["https://elsewhere.example"], "AllowMethods": ["*"], "AllowHeaders": ["*"],
                "ExposeHeaders": ["x-result"]}, "elsewhere"),
            # Any origin without credentials (`*`), and with them (the origin echoed).
            "anyone": url_with_cors(lam, name, {
                "AllowOrigins": ["*"], "AllowMethods": ["*"], "AllowHeaders": ["x-token"]}, "anyone"),
            "anyonecred": url_with_cors(lam, name, {
                "AllowOrigins": ["*"], "AllowMethods": ["PUT"], "AllowHeaders": ["x-token"],
                "ExposeHeaders": ["x-result"], "AllowCredentials": True}, "anyonecred"),
            # A browser cannot sign: the preflight passes without auth, the
            # request gets the 403, with the CORS headers that let the page read it.
            "iam": url_with_cors(lam, name, {
                "AllowOrigins": [page.origin], "AllowMethods": ["PUT"], "AllowHeaders": ["x-token"]},
                "iam", auth="AWS_IAM"),
        }
        token = {"X-Token": "t"}
        # (case, URL, method, request headers, credentials mode, what the page sees, whether the function runs)
        table = [
            ("strict-get", "strict", "GET", {}, "same-origin",
             answered("GET", result="strict-get"), True),
            ("strict-put-credentials", "strict", "PUT", token, "include",
             answered("PUT", result="strict-put-credentials", cookies=[cookie]), True),
            ("strict-delete", "strict", "DELETE", {}, "same-origin", REFUSED, False),
            ("strict-other-header", "strict", "PUT", {"X-Other": "1"}, "same-origin", REFUSED, False),
            # A simple request is sent without asking: the function runs, and
            # the browser hides its answer from the page.
            ("elsewhere-get", "elsewhere", "GET", {}, "same-origin", REFUSED, True),
            ("elsewhere-put", "elsewhere", "PUT", token, "same-origin", REFUSED, False),
            # No ExposeHeaders configured: the function's own
            # Access-Control-Expose-Headers stands (configured ones take
            # precedence where they conflict, above).
            ("anyone-get", "anyone", "GET", {}, "same-origin", answered("GET", own="yes"), True),
            ("anyone-put", "anyone", "PUT", token, "same-origin", answered("PUT", own="yes"), True),
            # Chromium refuses credentials with `Access-Control-Allow-Origin: *`,
            # after the request for a simple one, at the preflight otherwise.
            ("anyone-get-credentials", "anyone", "GET", {}, "include", REFUSED, True),
            ("anyone-put-credentials", "anyone", "PUT", token, "include", REFUSED, False),
            ("anyonecred-put-credentials", "anyonecred", "PUT", token, "include",
             answered("PUT", result="anyonecred-put-credentials", cookies=[cookie]), True),
            ("iam-put", "iam", "PUT", token, "same-origin",
             {"status": 403, "result": None, "own": None}, False),
        ]
        page.cases = [{"id": case, "url": f"{urls[url]}?case={case}", "method": method, "headers": headers,
                       "credentials": credentials} for case, url, method, headers, credentials, _, _ in table]
        seen, console = browse(page.origin + "/", page.reports, tmp_path)
    finally:
        page.close()
    assert seen["iam-put"].pop("body", {}).get("Message", "").startswith("Forbidden."), seen["iam-put"]
    assert seen == {case: want for case, _, _, _, _, want, _ in table}, console

    # Exactly the requests the browser sent reached the function: no preflight did.
    ran = Counter((case, method) for case, _, method, _, _, _, runs in table if runs)
    def invocations():
        events = function_log(server, name)
        lines = [e["message"].split() for e in events if e["message"].startswith("CORS-CASE")]
        return Counter((line[1], line[2]) for line in lines)

    wait_for(lambda: sum(invocations().values()) >= sum(ran.values()), "the invocations' log lines")
    assert invocations() == ran
