"""Function URLs served: payload format 2.0 in, AWS's response mapping out,
both auth types, the Host and path forms, aliases, and the errors a URL
answers with, driven by `requests`, raw HTTP, curl and the aws CLI."""

import base64
import datetime
import http.client
import json
import subprocess
import urllib.parse

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import (REGION, aws_cli, create, function_log, make_zip, nimbus_cli,
                      unique_name, wait_for)

# Answers by the `case` query parameter; by default the event itself.
APP = r'''
import base64, json, os

def handler(event, context):
    case = (event.get("queryStringParameters") or {}).get("case", "event")
    if case == "event":
        return {"statusCode": 200, "headers": {"content-type": "application/json"},
                "body": json.dumps({"event": event, "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"]})}
    if case == "structured":
        return {"statusCode": 201, "headers": {"x-custom": "yes", "content-type": "image/png"},
                "cookies": ["a=1; Max-Age=60", "b=2"], "isBase64Encoded": True,
                "body": base64.b64encode(b"\x89PNG\x00\xff").decode()}
    if case == "string":
        return "Hello"
    if case == "dict":
        return {"message": "no status code"}
    if case == "error":
        raise RuntimeError("boom")
    if case == "malformed":
        return {"statusCode": "not a number"}
    if case == "huge":
        return "x" * (6 * 1024 * 1024 + 200)
    if case == "smuggle":
        # A body that would be the connection's next response, were the
        # function's own framing headers believed.
        return {"statusCode": 200, "headers": {"content-length": "0", "connection": "keep-alive",
                                               "content-type": "text/plain"},
                "body": "HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n<h1>evil</h1>"}
    if case in ("100", "101", "103"):
        return {"statusCode": int(case), "headers": {"upgrade": "websocket", "connection": "upgrade"}}
    if case == "teapot":
        return {"statusCode": "418", "body": "i'm a teapot"}
    if case == "no-content":
        return {"statusCode": 204, "body": "not sent"}
    if case == "origin-wide":
        return {"statusCode": 200, "headers": {"service-worker-allowed": "/", "clear-site-data": '"cookies"'},
                "cookies": ["nimbus_console=forged; Path=/console/api; Max-Age=31536000", "mine=1; Path=/; Domain=localhost"],
                "body": "ok"}
'''
APP_ZIP = make_zip({"app.py": APP})


def make_url(lam, server, auth="NONE", public=True, qualifier=None, **kw):
    name = kw.pop("name", None) or unique_name("url")
    if not kw.pop("exists", False):
        create(lam, name, APP_ZIP, Timeout=10, **kw)
    q = {"Qualifier": qualifier} if qualifier else {}
    url = lam.create_function_url_config(FunctionName=name, AuthType=auth, **q)["FunctionUrl"]
    if public:
        rc, _, err = aws_cli(server, "add-permission", "--function-name", name, *(
            ["--qualifier", qualifier] if qualifier else []), "--statement-id", "public",
            "--action", "lambda:InvokeFunctionUrl", "--principal", "*", "--function-url-auth-type", "NONE")
        assert rc == 0, err
    return name, url


def url_id(url):
    return urllib.parse.urlsplit(url).path.split("/")[2]


def event_of(resp):
    assert resp.status_code == 200, resp.text
    return resp.json()["event"]


def test_the_url_works_as_handed_out_and_carries_payload_2_0(server, lam):
    name, url = make_url(lam, server)
    # Handed out in the path form: glibc's resolver does not resolve *.localhost.
    assert url.startswith(server.endpoint + "/lambda-url/") and len(url_id(url)) == 32
    assert url_id(url).isalnum() and url_id(url).islower()
    body = b"\x00\x01binary\xff"
    resp = requests.post(url + "items/7?a=1&a=2&b=x%20y", data=body, timeout=30, headers={
        "Content-Type": "application/octet-stream", "User-Agent": "nimbus-test/1.0"})
    ev = event_of(resp)
    assert ev["version"] == "2.0" and ev["routeKey"] == "$default"
    assert ev["rawPath"] == "/items/7" and ev["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert ev["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert ev["isBase64Encoded"] is True and base64.b64decode(ev["body"]) == body
    ctx = ev["requestContext"]
    assert ctx["apiId"] == url_id(url) and ctx["domainPrefix"] == url_id(url)
    assert ctx["http"]["method"] == "POST" and ctx["http"]["path"] == "/items/7"
    assert ctx["http"]["protocol"] == "HTTP/1.1" and ctx["http"]["sourceIp"] == "127.0.0.1"
    assert ctx["http"]["userAgent"] == "nimbus-test/1.0"
    assert ctx["requestId"] == resp.headers["x-amzn-RequestId"]
    assert ctx["routeKey"] == "$default" and ctx["stage"] == "$default"
    assert abs(ctx["timeEpoch"] / 1000 - datetime.datetime.now().timestamp()) < 60
    datetime.datetime.strptime(ctx["time"], "%d/%b/%Y:%H:%M:%S %z")
    assert "authorizer" not in ctx

    # Repeated headers are comma-joined (requests would merge them itself, so
    # this goes out raw), cookies leave the headers, text stays text.
    host, port = urllib.parse.urlsplit(server.endpoint).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("PUT", urllib.parse.urlsplit(url).path + "p")
    for k, v in [("X-Multi", "one"), ("X-Multi", "two"), ("Cookie", "c1=v1; c2=v2"),
                 ("Content-Type", "application/json"), ("Content-Length", "9")]:
        conn.putheader(k, v)
    conn.endheaders(b'{"k": 1}\n')
    raw = conn.getresponse()
    ev = json.loads(raw.read())["event"]
    assert raw.status == 200
    assert ev["headers"]["x-multi"] == "one,two" and "cookie" not in ev["headers"]
    assert ev["cookies"] == ["c1=v1", "c2=v2"]
    assert ev["body"] == '{"k": 1}\n' and ev["isBase64Encoded"] is False
    assert ev["rawPath"] == "/p" and "queryStringParameters" not in ev


def test_the_host_form_routes_by_host(server, lam):
    _, url = make_url(lam, server)
    host, port = urllib.parse.urlsplit(server.endpoint).netloc.split(":")
    name = f"{url_id(url)}.lambda-url.{REGION}.localhost"
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/some/path?q=1", headers={"Host": f"{name}:{port}"})
    resp = conn.getresponse()
    ev = json.loads(resp.read())["event"]
    assert resp.status == 200
    assert ev["rawPath"] == "/some/path" and ev["requestContext"]["domainName"] == name
    # A name of its own is an origin of its own, as on AWS: the browser is
    # told nothing more. The path form shares the console's origin, so its
    # pages are sandboxed (test_console.py has what a browser makes of it).
    assert resp.getheader("content-security-policy") is None
    assert requests.get(url, timeout=30).headers["content-security-policy"].startswith("sandbox allow-scripts")


def test_a_functions_framing_headers_are_renamed_and_informational_statuses_refused(server, lam):
    _, url = make_url(lam, server)
    host, port = urllib.parse.urlsplit(server.endpoint).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    path = urllib.parse.urlsplit(url).path
    conn.request("GET", path + "?case=smuggle")
    first = conn.getresponse()
    # The body is the function's, whole; its Content-Length is renamed, as AWS renames it.
    assert first.read() == b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n<h1>evil</h1>"
    assert first.getheader("x-amzn-Remapped-content-length") == "0"
    assert first.getheader("x-amzn-Remapped-connection") == "keep-alive"
    # The next response on the same connection is the next request's.
    conn.request("GET", path + "?case=string")
    second = conn.getresponse()
    assert (second.status, second.read()) == (200, b'"Hello"')
    for case in ("100", "101", "103"):
        conn.request("GET", path + f"?case={case}")
        r = conn.getresponse()
        assert r.status == 502 and r.read() == b"Internal Server Error", case
        assert r.getheader("upgrade") is None


def test_a_path_form_answer_cannot_act_on_the_shared_origin(server, lam):
    _, url = make_url(lam, server)
    r = requests.get(url, params={"case": "origin-wide"}, timeout=30)
    assert r.status_code == 200 and r.text == "ok"
    # Its own cookie stays, narrowed to the URL's own path and host (a tenant's
    # cookies for the whole origin, enough of them, made every request to it
    # too large, the console's too); one named as the console's session, and
    # the headers that act on the whole origin, are dropped.
    assert r.raw.headers.getlist("set-cookie") == [f"mine=1; Path=/lambda-url/{url_id(url)}/"]
    assert "service-worker-allowed" not in r.headers and "clear-site-data" not in r.headers
    # The host form is an origin of its own, and keeps them, but for a
    # cookie's Domain, which would reach the other URLs under it.
    host, port = urllib.parse.urlsplit(server.endpoint).netloc.split(":")
    r = requests.get(f"{server.endpoint}/?case=origin-wide", timeout=30,
                     headers={"Host": f"{url_id(url)}.lambda-url.{REGION}.localhost:{port}"})
    assert r.raw.headers.getlist("set-cookie") == ["nimbus_console=forged; Path=/console/api; Max-Age=31536000",
                                                   "mine=1; Path=/"]
    assert r.headers["service-worker-allowed"] == "/"


def test_a_callers_forwarded_for_is_followed_by_the_peer(server, lam):
    _, url = make_url(lam, server)
    ev = event_of(requests.get(url, headers={"X-Forwarded-For": "10.9.8.7", "X-Forwarded-Proto": "gopher",
                                             "Connection": "keep-alive"}, timeout=30))
    assert ev["headers"]["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    # The scheme and port the client reached, as AWS's front says them; no hop-by-hop headers.
    port = urllib.parse.urlsplit(server.endpoint).port
    assert (ev["headers"]["x-forwarded-proto"], ev["headers"]["x-forwarded-port"]) == ("http", str(port))
    assert "connection" not in ev["headers"]
    assert ev["requestContext"]["http"]["sourceIp"] == "127.0.0.1"
    assert event_of(requests.get(url, timeout=30))["headers"]["x-forwarded-for"] == "127.0.0.1"


def test_responses_map_as_aws_maps_them(server, lam):
    name, url = make_url(lam, server)
    r = requests.get(url, params={"case": "structured"}, timeout=30)
    assert r.status_code == 201 and r.content == b"\x89PNG\x00\xff"
    assert r.headers["x-custom"] == "yes" and r.headers["content-type"] == "image/png"
    assert r.raw.headers.getlist("set-cookie") == ["a=1; Max-Age=60", "b=2"]
    r = requests.get(url, params={"case": "string"}, timeout=30)
    assert (r.status_code, r.text, r.headers["content-type"]) == (200, '"Hello"', "application/json")
    r = requests.get(url, params={"case": "dict"}, timeout=30)
    assert r.status_code == 200 and r.json() == {"message": "no status code"}
    for case in ("error", "malformed", "huge"):
        r = requests.get(url, params={"case": case}, timeout=60)
        assert r.status_code == 502, (case, r.text)
        assert r.text == "Internal Server Error" and r.headers["x-amzn-ErrorType"] == "BadGatewayException"
    # A status code given as a string, as API Gateway functions often give it.
    r = requests.get(url, params={"case": "teapot"}, timeout=30)
    assert (r.status_code, r.text) == (418, "i'm a teapot")
    # A 204 has no body and no length of one.
    host, port = urllib.parse.urlsplit(server.endpoint).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", urllib.parse.urlsplit(url).path + "?case=no-content")
    r = conn.getresponse()
    assert (r.status, r.read(), r.getheader("content-length")) == (204, b"", None)

    # URL invokes are ordinary invokes: their REPORT lines are in the function's log.
    wait_for(lambda: sum(e["message"].startswith("REPORT") for e in function_log(server, name)) >= 8,
             "the URL invocations' REPORT lines")


def test_errors_a_url_answers(server, lam):
    name, url = make_url(lam, server)
    r = requests.post(url, data=b"x" * (6 * 1024 * 1024 + 1), timeout=60)
    assert r.status_code == 413 and "Request must be smaller than 6291456 bytes" in r.json()["Message"]
    # The event is what the limit counts: a binary body grows by a third in base64.
    r = requests.post(url, data=b"\xff" * (5 * 1024 * 1024), headers={"Content-Type": "application/octet-stream"},
                      timeout=60)
    assert r.status_code == 413, r.status_code
    # A URL that leads nowhere is one the caller may not see, as AWS answers it.
    r = requests.get(url.replace(url_id(url), "a" * 32), timeout=30)
    assert (r.status_code, r.headers["x-amzn-ErrorType"], r.json()) == (403, "AccessDeniedException", {"Message": None})
    # Host names are case-insensitive.
    host, port = urllib.parse.urlsplit(server.endpoint).netloc.split(":")
    r = requests.get(f"{server.endpoint}/", timeout=30,
                     headers={"Host": f"{url_id(url).upper()}.LAMBDA-URL.{REGION}.localhost:{port}"})
    assert r.status_code == 200, r.text
    # So is the URL of an alias deleted since (it went with its alias).
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="gone", FunctionVersion="1")
    _, alias_url = make_url(lam, server, qualifier="gone", name=name, exists=True)
    assert requests.get(alias_url, timeout=30).status_code == 200
    lam.delete_alias(FunctionName=name, Name="gone")
    r = requests.get(alias_url, timeout=30)
    assert (r.status_code, r.headers["x-amzn-ErrorType"]) == (403, "AccessDeniedException")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    r = requests.get(url, timeout=30)
    assert r.status_code == 429 and r.headers["x-amzn-ErrorType"] == "TooManyRequestsException"


def test_auth_type_none_needs_the_public_grant(server, lam):
    name, url = make_url(lam, server, public=False)
    r = requests.get(url, timeout=30)
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    assert r.json()["Message"].startswith("Forbidden.")
    # A grant without the auth-type condition does not open the URL either.
    lam.add_permission(FunctionName=name, StatementId="nocond", Action="lambda:InvokeFunctionUrl", Principal="*")
    assert requests.get(url, timeout=30).status_code == 403
    rc, _, err = aws_cli(server, "add-permission", "--function-name", name, "--statement-id", "public",
                         "--action", "lambda:InvokeFunctionUrl", "--principal", "*",
                         "--function-url-auth-type", "NONE")
    assert rc == 0, err
    assert requests.get(url, timeout=30).status_code == 200
    lam.remove_permission(FunctionName=name, StatementId="public")
    assert requests.get(url, timeout=30).status_code == 403


def sign(server, method, url, body=b"", secret=None):
    key, real_secret = server.credentials()
    req = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(Credentials(key, secret or real_secret), "lambda", REGION).add_auth(req)
    return dict(req.headers.items())


def test_aws_iam_urls_need_a_lambda_signature(server, lam):
    _, url = make_url(lam, server, auth="AWS_IAM", public=False)
    target = url + "secure?x=1"
    r = requests.get(target, timeout=30)
    assert r.status_code == 403 and r.json()["Message"].startswith("Forbidden.")
    r = requests.post(target, data=b"{}", headers=sign(server, "POST", target, b"{}", secret="wrong"), timeout=30)
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    r = requests.post(target, data=b"{}", headers=sign(server, "POST", target, b"{}"), timeout=30)
    ev = event_of(r)
    iam = ev["requestContext"]["authorizer"]["iam"]
    assert iam["accessKey"] == server.credentials()[0]
    assert ev["requestContext"]["accountId"] == iam["accountId"]
    # A signature for another service is refused.
    req = AWSRequest(method="GET", url=target)
    SigV4Auth(Credentials(*server.credentials()), "s3", REGION).add_auth(req)
    assert requests.get(target, headers=dict(req.headers.items()), timeout=30).status_code == 403


def test_a_url_on_an_alias_runs_the_alias_version(server, lam):
    name = unique_name("url")
    create(lam, name, APP_ZIP)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    _, url = make_url(lam, server, name=name, exists=True, qualifier="live")
    r = requests.get(url, timeout=30)
    assert r.status_code == 200 and r.json()["version"] == version


def test_the_cli_creates_and_prints_a_working_url(server, lam):
    name = unique_name("url")
    create(lam, name, APP_ZIP)
    url = nimbus_cli(server, "function", "url", name, "--auth-type", "NONE").stdout.strip()
    out = subprocess.run(["curl", "-sS", "--fail", url + "?case=string"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout == '"Hello"', out.stderr
    assert nimbus_cli(server, "function", "url", name).stdout.strip() == url, "an existing URL is printed"
    # An existing AWS_IAM URL asked to be NONE is changed, and opened.
    other = unique_name("url")
    create(lam, other, APP_ZIP)
    iam = nimbus_cli(server, "function", "url", other).stdout.strip()
    assert requests.get(iam + "?case=string", timeout=30).status_code == 403
    made = nimbus_cli(server, "function", "url", other, "--auth-type", "NONE")
    assert made.stdout.strip() == iam and "AuthType NONE" in made.stderr, made.stderr
    assert lam.get_function_url_config(FunctionName=other)["AuthType"] == "NONE"
    assert requests.get(iam + "?case=string", timeout=30).text == '"Hello"'
    again = nimbus_cli(server, "function", "url", other, "--auth-type", "NONE")
    assert again.stdout.strip() == iam and again.stderr == "", "nothing to change, and the grant is kept"
