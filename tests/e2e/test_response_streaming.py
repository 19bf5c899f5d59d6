"""Response streaming end to end: a custom runtime posting its response in
streaming mode (chunked, errors in trailers) as AWS's runtime clients do,
read through InvokeWithResponseStream with boto3 and through a
RESPONSE_STREAM function URL with `curl -N`."""

import base64
import json
import subprocess
import time
import urllib.parse

import pytest

from conftest import aws_cli, create, make_zip, unique_name

# A provided.al2023 bootstrap speaking the Runtime API over raw HTTP/1.1, so
# that chunks go out as written and errors go in trailers. The event (or a
# URL's `spec` query parameter) says what to send: `parts` are written in
# order (a number is a pause in seconds), `http` sends an HTTP integration
# prelude first, `error` fails the stream in its trailers, `buffered`
# answers with an ordinary response instead.
BOOTSTRAP = r'''#!/usr/bin/python3.11
import base64, http.client, json, os, socket, time

HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
BASE = "/2018-06-01/runtime/invocation/"

def call(method, path, body=None):
    c = http.client.HTTPConnection(HOST, int(PORT))
    c.request(method, path, body=body)
    r = c.getresponse()
    return r, r.read()

def stream(rid, spec):
    s = socket.create_connection((HOST, int(PORT)))
    ctype = "application/vnd.awslambda.http-integration-response" if "http" in spec else spec.get("type", "text/plain")
    s.sendall((f"POST {BASE}{rid}/response HTTP/1.1\r\nHost: {HOST}\r\n"
               "Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n"
               f"Content-Type: {ctype}\r\n"
               "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n").encode())
    def send(data):
        s.sendall(b"%x\r\n%s\r\n" % (len(data), data))
    if "http" in spec:
        send(json.dumps(spec["http"]).encode() + b"\0" * 8)
    for part in spec.get("parts", []):
        if isinstance(part, (int, float)):
            time.sleep(part)
        else:
            send(part.encode())
    trailers = b""
    if "error" in spec:
        body = json.dumps({"errorType": spec["error"], "errorMessage": "failed mid-stream"}).encode()
        trailers = (b"Lambda-Runtime-Function-Error-Type: " + spec["error"].encode() + b"\r\n" +
                    b"Lambda-Runtime-Function-Error-Body: " + base64.b64encode(body) + b"\r\n")
    s.sendall(b"0\r\n" + trailers + b"\r\n")
    s.recv(4096)
    s.close()

while True:
    r, body = call("GET", BASE + "next")
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    event = json.loads(body)
    spec = json.loads((event.get("queryStringParameters") or {}).get("spec", "{}")) if "rawPath" in event else event
    if spec.get("buffered"):
        call("POST", f"{BASE}{rid}/response", json.dumps({"whole": True}).encode())
    else:
        stream(rid, spec)
'''
ZIP = make_zip({"bootstrap": BOOTSTRAP}, executables=("bootstrap",))


@pytest.fixture(scope="module")
def fn(lam):
    name = unique_name("stream")
    create(lam, name, ZIP, Runtime="provided.al2023", Handler="x", Timeout=3)
    return name


def read_stream(lam, name, spec, **kw):
    """Invokes with response streaming; returns (chunks with arrival times, InvokeComplete, response)."""
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(spec), **kw)
    chunks, complete = [], None
    for event in resp["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append((time.monotonic(), event["PayloadChunk"]["Payload"]))
        else:
            complete = event["InvokeComplete"]
    return chunks, complete, resp


def test_chunks_reach_boto3_while_the_function_runs(lam, fn):
    chunks, complete, resp = read_stream(lam, fn, {"parts": ["first ", 2.0, "last"]}, LogType="Tail")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200 and resp["ExecutedVersion"] == "$LATEST"
    assert b"".join(c for _, c in chunks) == b"first last"
    # The first chunk came before the function's pause, not with its end.
    assert chunks[-1][0] - chunks[0][0] > 1.5
    assert "ErrorCode" not in complete
    assert "REPORT RequestId" in base64.b64decode(complete["LogResult"]).decode()


def test_errors_end_the_stream_with_invoke_complete(lam, fn):
    chunks, complete, _ = read_stream(lam, fn, {"parts": ["partial"], "error": "Custom.Failure"})
    assert b"".join(c for _, c in chunks) == b"partial"
    assert complete["ErrorCode"] == "Custom.Failure" and complete["ErrorDetails"] == "failed mid-stream"
    chunks, complete, _ = read_stream(lam, fn, {"parts": ["before timeout", 10]})
    assert b"".join(c for _, c in chunks) == b"before timeout"
    assert complete["ErrorCode"] == "Sandbox.Timedout"


def test_a_buffered_response_arrives_as_one_chunk(lam, fn):
    chunks, complete, _ = read_stream(lam, fn, {"buffered": True})
    assert [c for _, c in chunks] == [b'{"whole": true}'] and "ErrorCode" not in complete


def test_plain_invoke_of_a_streaming_function_collects_the_stream(lam, fn):
    r = lam.invoke(FunctionName=fn, Payload=json.dumps({"parts": ["a", "b", "c"]}))
    assert r["Payload"].read() == b"abc" and "FunctionError" not in r
    r = lam.invoke(FunctionName=fn, Payload=json.dumps({"parts": ["a"], "error": "Custom.Failure"}))
    assert r["FunctionError"] == "Unhandled" and json.loads(r["Payload"].read())["errorType"] == "Custom.Failure"


def test_refusals_come_before_the_stream(lam, fn):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_with_response_stream(FunctionName=fn + "-missing", Payload=b"{}")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke_with_response_stream(FunctionName=fn, Payload=b"not json")


@pytest.fixture(scope="module")
def stream_url(server, lam, fn):
    url = lam.create_function_url_config(FunctionName=fn, AuthType="NONE", InvokeMode="RESPONSE_STREAM")["FunctionUrl"]
    rc, _, err = aws_cli(server, "add-permission", "--function-name", fn, "--statement-id", "public",
                         "--action", "lambda:InvokeFunctionUrl", "--principal", "*",
                         "--function-url-auth-type", "NONE")
    assert rc == 0, err
    return url


def curl_stream(url, spec):
    """`curl -N` on the URL; returns (lines with arrival times, exit code, headers)."""
    target = url + "?" + urllib.parse.urlencode({"spec": json.dumps(spec)})
    p = subprocess.Popen(["curl", "-sS", "-N", "-D", "/dev/stderr", target], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    lines = [(time.monotonic(), line) for line in iter(p.stdout.readline, b"")]
    p.wait(timeout=60)
    return lines, p.returncode, p.stderr.read().decode()


def test_curl_shows_url_chunks_as_they_are_written(stream_url):
    lines, rc, headers = curl_stream(stream_url, {
        "http": {"statusCode": 201, "headers": {"content-type": "text/event-stream", "x-a": "1"},
                 "cookies": ["s=1"]},
        "parts": ["data: one\n", 2.0, "data: two\n"]})
    assert rc == 0, headers
    assert [l for _, l in lines] == [b"data: one\n", b"data: two\n"]
    assert lines[1][0] - lines[0][0] > 1.5, "the first line arrived before the function finished"
    assert headers.startswith("HTTP/1.1 201")
    lower = headers.lower()
    assert "content-type: text/event-stream" in lower and "x-a: 1" in lower and "set-cookie: s=1" in lower


def test_url_streams_without_a_prelude_use_the_stream_type(stream_url):
    lines, rc, headers = curl_stream(stream_url, {"parts": ["plain\n"], "type": "text/plain"})
    assert rc == 0 and [l for _, l in lines] == [b"plain\n"]
    assert headers.startswith("HTTP/1.1 200") and "content-type: text/plain" in headers.lower()


def test_a_url_stream_the_function_fails_is_cut_off(stream_url):
    lines, rc, _ = curl_stream(stream_url, {"parts": ["partial\n"], "error": "Custom.Failure"})
    assert [l for _, l in lines] == [b"partial\n"]
    assert rc == 18, "curl reports a transfer closed with data outstanding"
