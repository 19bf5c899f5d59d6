"""Invoke with `--isolation process`: the Runtime API, the Python managed
runtime, AWS's own runtime client, errors, timeouts and logs."""

import base64
import json
import os
import re
import subprocess
import sys

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from conftest import ACCOUNT, BIN, ROLE, Server, arn, error_code, function_log, logs_client, make_zip, nimbus_cli, unique_name, wait_for

APP = '''
import json, os, sys, time
COUNT = 0

def handler(event, context):
    global COUNT
    COUNT += 1
    print("hello from", context.function_name)
    print("to stderr", file=sys.stderr)
    return {"event": event, "count": COUNT, "request_id": context.aws_request_id,
            "arn": context.invoked_function_arn, "remaining": context.get_remaining_time_in_millis(),
            "memory": context.memory_limit_in_mb, "version": context.function_version,
            "client_context": context.client_context and {"custom": context.client_context.custom},
            "env": {k: os.environ.get(k) for k in (
                "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_REGION", "AWS_DEFAULT_REGION",
                "AWS_EXECUTION_ENV", "_HANDLER", "TZ", "LANG", "AWS_LAMBDA_INITIALIZATION_TYPE", "GREETING")}}

def patient(event, context):
    global COUNT
    COUNT += 1
    time.sleep(event.get("sleep", 0))
    print("patient for", event.get("sleep", 0), "seconds")
    return COUNT

def fail(event, context):
    raise ValueError("bad thing")

def slow(event, context):
    time.sleep(30)

def crash(event, context):
    os._exit(3)

def unserializable(event, context):
    return {1, 2}
'''


@pytest.fixture(scope="module")
def proc_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("invoke") / "data", args=["--isolation", "process"]).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def plam(proc_server):
    return proc_server.client()


def py_function(lam, handler="app.handler", files=None, **kw):
    name = unique_name("inv")
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler=handler, Role=ROLE,
                        Code={"ZipFile": make_zip(files or {"app.py": APP})}, **kw)
    return name


def invoke(lam, name, payload=None, **kw):
    r = lam.invoke(FunctionName=name, Payload=json.dumps(payload if payload is not None else {}), **kw)
    body = r["Payload"].read()
    return r, json.loads(body) if body else None


def test_request_response_context_and_environment(plam):
    name = py_function(plam, Environment={"Variables": {"GREETING": "hi"}}, MemorySize=256)
    r, out = invoke(plam, name, {"x": 1})
    assert r["StatusCode"] == 200 and "FunctionError" not in r
    assert r["ExecutedVersion"] == "$LATEST"
    assert out["event"] == {"x": 1}
    assert out["request_id"] == r["ResponseMetadata"]["RequestId"]
    assert out["arn"] == arn(name)
    assert 0 < out["remaining"] <= 3000
    assert (out["memory"], out["version"]) == ("256", "$LATEST")
    env = out["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name and env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{name}"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", env["AWS_LAMBDA_LOG_STREAM_NAME"])
    assert (env["AWS_REGION"], env["AWS_DEFAULT_REGION"]) == ("us-east-1", "us-east-1")
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.11" and env["_HANDLER"] == "app.handler"
    assert (env["TZ"], env["LANG"], env["AWS_LAMBDA_INITIALIZATION_TYPE"]) == (":UTC", "en_US.UTF-8", "on-demand")
    assert env["GREETING"] == "hi"


def test_module_state_survives_warm_invokes(plam):
    name = py_function(plam)
    counts = [invoke(plam, name)[1]["count"] for _ in range(3)]
    assert counts == [1, 2, 3]


def test_an_invocation_whose_caller_hangs_up_finishes_on_its_environment(proc_server, plam):
    # A client that gives up closes its connection mid-invocation (the
    # server drops the request); the invocation still runs to its end on its
    # environment, is logged, and leaves the environment warm for the next.
    name = py_function(plam, handler="app.patient")
    assert invoke(plam, name)[1] == 1
    impatient = boto3.client("lambda", endpoint_url=proc_server.endpoint, region_name=plam.meta.region_name,
                             aws_access_key_id=proc_server.credentials()[0],
                             aws_secret_access_key=proc_server.credentials()[1],
                             config=Config(retries={"total_max_attempts": 1}, read_timeout=1))
    with pytest.raises(ReadTimeoutError):
        impatient.invoke(FunctionName=name, Payload=json.dumps({"sleep": 2}))
    wait_for(lambda: any("patient for 2 seconds" in e["message"] for e in function_log(proc_server, name)),
             "the abandoned invocation's last line", timeout=30)
    assert invoke(plam, name)[1] == 3


def test_empty_payload_is_an_empty_object_and_bad_json_is_refused(plam):
    name = py_function(plam)
    r = plam.invoke(FunctionName=name)
    assert json.loads(r["Payload"].read())["event"] == {}
    with pytest.raises(ClientError) as e:
        plam.invoke(FunctionName=name, Payload=b"{not json")
    assert error_code(e) == "InvalidRequestContentException"
    # JSON with a string that is not UTF-8, called or queued: refused, not run.
    for kind in ("RequestResponse", "Event"):
        with pytest.raises(ClientError) as e:
            plam.invoke(FunctionName=name, Payload=b'{"a": "\xff"}', InvocationType=kind)
        assert error_code(e) == "InvalidRequestContentException"
        assert "Invalid UTF-8 start byte 0xff" in str(e.value), e.value


def test_tail_log_has_aws_lines(plam):
    name = py_function(plam)
    r, _ = invoke(plam, name, LogType="Tail")
    log = base64.b64decode(r["LogResult"]).decode()
    rid = r["ResponseMetadata"]["RequestId"]
    assert f"START RequestId: {rid} Version: $LATEST" in log
    assert "hello from " + name in log and "to stderr" in log
    assert f"END RequestId: {rid}" in log
    report = re.search(rf"REPORT RequestId: {rid}\tDuration: (\d+\.\d\d) ms\tBilled Duration: (\d+) ms\t"
                       rf"Memory Size: 128 MB\tMax Memory Used: (\d+) MB\tInit Duration: (\d+\.\d\d) ms\t", log)
    assert report, log
    duration, billed, used, init = float(report[1]), int(report[2]), int(report[3]), float(report[4])
    assert billed >= duration and billed >= 1 and used > 0 and init > 0
    r2, _ = invoke(plam, name, LogType="Tail")
    assert "Init Duration" not in base64.b64decode(r2["LogResult"]).decode(), "warm invoke"


# Our two runtimes, each with a handler that prints `line <n>` and returns its event.
ECHOES = pytest.mark.parametrize("runtime, files, handler", [
    ("python3.11", {"app.py": "def handler(event, context):\n    print('line', event.get('n'))\n    return event\n"},
     "app.handler"),
    ("nodejs20.x", {"index.mjs": "export const handler = async (event) => { console.log('line', event.n); return event; };\n"},
     "index.handler"),
])


@ECHOES
def test_every_invoke_logs_what_it_printed_before_it_returned(plam, runtime, files, handler):
    # The runtime prints, then answers: the answer can reach the node before
    # the output does, and the invoke must still wait for what was printed.
    for f in range(4):
        name = unique_name("tail")
        plam.create_function(FunctionName=name, Runtime=runtime, Handler=handler, Role=ROLE,
                             Code={"ZipFile": make_zip(files)}, Timeout=10)
        for n in range(10):
            r, _ = invoke(plam, name, {"n": n}, LogType="Tail")
            assert re.search(rf"\bline {n}\n", base64.b64decode(r["LogResult"]).decode()), (f, n)


def test_one_worker_thread_serves_invokes_and_zero_is_refused(tmp_path):
    # Every task of an invoke then shares one thread: nothing may wait on another.
    s = Server(tmp_path / "data", args=["--isolation", "process", "--worker-threads", "1"]).start()
    try:
        lam = s.client()
        name = py_function(lam)
        for n in range(3):
            r, out = invoke(lam, name, {"n": n}, LogType="Tail")
            assert "FunctionError" not in r and out["event"] == {"n": n}, out
            assert "hello from " + name in base64.b64decode(r["LogResult"]).decode()
    finally:
        s.stop()
    refused = subprocess.run([BIN, "serve", "--worker-threads", "0", "--data-dir", str(tmp_path / "other")],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "--worker-threads" in refused.stderr, refused.stderr
    assert not (tmp_path / "other").exists()


def test_function_error(plam):
    name = py_function(plam, handler="app.fail")
    r, out = invoke(plam, name)
    assert r["StatusCode"] == 200 and r["FunctionError"] == "Unhandled"
    assert (out["errorType"], out["errorMessage"]) == ("ValueError", "bad thing")
    assert out["requestId"] == r["ResponseMetadata"]["RequestId"] and out["stackTrace"]


def test_timeout_kills_and_replaces_the_environment(plam):
    name = py_function(plam, handler="app.slow", Timeout=1)
    r, out = invoke(plam, name, LogType="Tail")
    assert r["FunctionError"] == "Unhandled" and out["errorType"] == "Sandbox.Timedout"
    assert out["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert "Status: timeout" in base64.b64decode(r["LogResult"]).decode()
    plam.update_function_configuration(FunctionName=name, Handler="app.handler")
    assert invoke(plam, name)[1]["count"] == 1, "a new environment after the update"


def test_crash_is_an_exit_error_and_the_runtime_is_replaced(plam):
    name = py_function(plam, handler="app.crash")
    r, out = invoke(plam, name, LogType="Tail")
    assert r["FunctionError"] == "Unhandled" and out["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exit status 3" in out["errorMessage"]
    # The function's own log says it as AWS's does, between START and END.
    request = r["ResponseMetadata"]["RequestId"]
    log = base64.b64decode(r["LogResult"]).decode()
    said = f"RequestId: {request} Error: Runtime exited with error: exit status 3\nRuntime.ExitError\n"
    assert said in log and log.index("START") < log.index(said) < log.index("END RequestId"), log
    assert "Status: error\tError Type: Runtime.ExitError" in log, log
    r, out = invoke(plam, name)
    assert out["errorType"] == "Runtime.ExitError", "a fresh runtime ran (and crashed) again"


@pytest.mark.parametrize("handler, files, error_type", [
    ("missing.handler", None, "Runtime.ImportModuleError"),
    ("app.nope", None, "Runtime.HandlerNotFound"),
    ("app.handler", {"app.py": "def handler(:\n"}, "Runtime.UserCodeSyntaxError"),
    ("app.unserializable", None, "Runtime.MarshalError"),
])
def test_runtime_errors(plam, handler, files, error_type):
    name = py_function(plam, handler=handler, files=files)
    r, out = invoke(plam, name, LogType="Tail")
    assert r["FunctionError"] == "Unhandled" and out["errorType"] == error_type
    log = base64.b64decode(r["LogResult"]).decode()
    if error_type != "Runtime.MarshalError":  # the others are init errors: AWS's platform lines say so
        assert re.search(rf"INIT_REPORT Init Duration: [\d.]+ ms\tPhase: init\tStatus: error\tError Type: "
                         rf"{re.escape(error_type)}\n", log), log
        assert f"Status: error\tError Type: {error_type}" in log.split("REPORT RequestId")[-1], log
    if error_type == "Runtime.ImportModuleError":
        assert out["stackTrace"] == [], "AWS's runtime shows no importlib frames"
    if error_type == "Runtime.MarshalError":
        assert out["requestId"] == r["ResponseMetadata"]["RequestId"]


def test_versions_aliases_and_weights(plam):
    name = py_function(plam)
    plam.publish_version(FunctionName=name)
    plam.update_function_configuration(FunctionName=name, MemorySize=256)
    plam.publish_version(FunctionName=name)
    r, out = invoke(plam, name, Qualifier="1")
    assert r["ExecutedVersion"] == "1" and out["memory"] == "128" and out["arn"] == arn(name, "1")
    plam.create_alias(FunctionName=name, Name="live", FunctionVersion="1",
                      RoutingConfig={"AdditionalVersionWeights": {"2": 1.0}})
    r, out = invoke(plam, f"{name}:live")
    assert r["ExecutedVersion"] == "2" and out["arn"] == arn(name, "live")
    plam.update_alias(FunctionName=name, Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 0.0}})
    assert invoke(plam, name, Qualifier="live")[0]["ExecutedVersion"] == "1"


def test_update_code_retires_old_environments(plam):
    name = py_function(plam)
    assert invoke(plam, name)[1]["count"] == 1
    plam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 'new'\n"}))
    assert invoke(plam, name)[1] == "new"


def test_client_context_and_dry_run(plam):
    name = py_function(plam)
    ctx = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    _, out = invoke(plam, name, ClientContext=ctx)
    assert out["client_context"] == {"custom": {"k": "v"}}
    # Not base64, or not a JSON object once decoded: refused before the function runs.
    for bad in ["not base64!", base64.b64encode(b"hello").decode(), base64.b64encode(b"[1]").decode()]:
        with pytest.raises(ClientError) as e:
            plam.invoke(FunctionName=name, ClientContext=bad)
        assert (error_code(e), e.value.response["Error"]["Message"]) == \
            ("InvalidRequestContentException", "Client context must be a valid Base64-encoded JSON object.")
    dry = plam.invoke(FunctionName=name, InvocationType="DryRun")
    assert dry["StatusCode"] == 204
    with pytest.raises(ClientError) as e:
        plam.invoke(FunctionName=unique_name(), InvocationType="DryRun")
    assert error_code(e) == "ResourceNotFoundException"


def test_provided_runtime_with_awslambdaric(plam, tmp_path):
    """AWS's own Python runtime interface client, unmodified, as a bootstrap."""
    pkg = tmp_path / "pkg"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--target", str(pkg), "awslambdaric"], check=True, timeout=300)
    files = {str(p.relative_to(pkg)): p.read_bytes() for p in pkg.rglob("*") if p.is_file()}
    files["app.py"] = b"def handler(event, context):\n    return {'ric': True, 'event': event, 'id': context.aws_request_id}\n"
    files["bootstrap"] = (f"#!/bin/sh\ncd \"$LAMBDA_TASK_ROOT\"\nexport PYTHONPATH=\"$LAMBDA_TASK_ROOT\"\n"
                          f"exec {sys.executable} -m awslambdaric \"$_HANDLER\"\n").encode()
    name = unique_name("ric")
    plam.create_function(FunctionName=name, Runtime="provided.al2023", Handler="app.handler", Role=ROLE,
                         Code={"ZipFile": make_zip(files, executables={"bootstrap"})}, Timeout=30)
    for i in range(2):
        r, out = invoke(plam, name, {"n": i})
        assert "FunctionError" not in r, out
        assert out == {"ric": True, "event": {"n": i}, "id": r["ResponseMetadata"]["RequestId"]}


# A runtime that misbehaves on the Runtime API before it answers: a post
# for another invocation with a body it never sends, and a second post
# while its own response is half sent. What it saw is its answer.
HOSTILE_RUNTIME = r'''
import http.client, json, os, socket
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
BASE = "/2018-06-01/runtime/invocation"
def raw(head):
    s = socket.create_connection((host, int(port)), timeout=20)
    s.sendall(head.encode())
    return s
def status(s):
    try:
        return s.recv(4096).split(b"\r\n")[0].decode()
    except socket.timeout:
        return "no answer"
while True:
    c = http.client.HTTPConnection(host, int(port), timeout=None)
    c.request("GET", BASE + "/next")
    r = c.getresponse()
    r.read()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    seen = {"other": status(raw(f"POST {BASE}/not-this-one/response HTTP/1.1\r\nHost: x\r\nContent-Length: 6000000\r\n\r\n"))}
    size = 4096
    # Its body is asked for (100 Continue) once the node has begun reading it.
    own = raw(f"POST {BASE}/{rid}/response HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
              "Expect: 100-continue\r\n\r\n")
    seen["continue"] = status(own)
    own.sendall(b"{")
    second = http.client.HTTPConnection(host, int(port), timeout=20)
    second.request("POST", f"{BASE}/{rid}/response", body=b"{}")
    seen["second"] = second.getresponse().status
    rest = json.dumps({"seen": seen})[1:]
    own.sendall((rest + " " * (size - 1 - len(rest))).encode())
    seen["own"] = status(own)
'''


def test_a_runtime_posting_out_of_turn_is_refused_before_its_body_is_read(plam):
    files = {"rt.py": HOSTILE_RUNTIME,
             "bootstrap": f"#!/bin/sh\nexec {sys.executable} -I \"$LAMBDA_TASK_ROOT/rt.py\"\n"}
    name = unique_name("hostile-rt")
    plam.create_function(FunctionName=name, Runtime="provided.al2023", Handler="x", Role=ROLE,
                         Code={"ZipFile": make_zip(files, executables={"bootstrap"})}, Timeout=30)
    r, out = invoke(plam, name, {})
    assert "FunctionError" not in r, out
    # Answered without its body being waited for; the second post refused,
    # so the response is the one half sent first.
    assert out == {"seen": {"other": "HTTP/1.1 400 Bad Request", "continue": "HTTP/1.1 100 Continue",
                            "second": 429}}, out


def test_nimbus_cli_invoke(proc_server, plam, tmp_path):
    name = py_function(plam)
    r = nimbus_cli(proc_server, "invoke", name, '{"a": 1}', "--tail")
    assert json.loads(r.stdout)["event"] == {"a": 1}
    assert "START RequestId:" in r.stderr and "REPORT RequestId:" in r.stderr
    event_file = tmp_path / "event.json"
    event_file.write_text('{"from": "file"}')
    out = json.loads(nimbus_cli(proc_server, "invoke", name, f"@{event_file}", "--json").stdout)
    assert out["StatusCode"] == 200 and out["ExecutedVersion"] == "$LATEST" and out["FunctionError"] is None
    assert out["Payload"]["event"] == {"from": "file"} and out["Payload"]["count"] == 2
    failing = py_function(plam, handler="app.fail")
    r = nimbus_cli(proc_server, "invoke", failing, check=False)
    assert r.returncode != 0 and "ValueError" in r.stdout and "Unhandled" in r.stderr
    r = nimbus_cli(proc_server, "invoke", unique_name(), check=False)
    assert r.returncode != 0 and "ResourceNotFoundException" in r.stderr


ASYNC_APP = '''
import json, os

def record(event, context):
    with open(event["path"], "a") as f:
        f.write(json.dumps({"id": context.aws_request_id, "event": event}) + "\\n")
    if event.get("fail"):
        raise RuntimeError("failing on purpose")
    return "ok"
'''


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def retry_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("async") / "data", args=["--isolation", "process", "--async-retry-delay", "0"]).start()
    yield s
    s.stop()


def async_function(lam, **kw):
    name = unique_name("async")
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.record", Role=ROLE,
                        Code={"ZipFile": make_zip({"app.py": ASYNC_APP})}, **kw)
    return name


def test_event_is_queued_then_delivered_with_its_request_id(retry_server, tmp_path):
    lam = retry_server.client()
    name = async_function(lam)
    out = tmp_path / "calls"
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"path": str(out)}))
    assert r["StatusCode"] == 202 and r["Payload"].read() == b""
    calls = wait_for(lambda: lines(out), "the event to be delivered")
    assert calls[0]["id"] == r["ResponseMetadata"]["RequestId"]
    big = json.dumps({"x": "y" * 1_100_000})
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=big)
    assert error_code(e) == "RequestEntityTooLargeException"
    assert e.value.response["Error"]["Message"] == \
        f"{len(big)} byte payload is too large for the Event invocation type (limit 1048576 bytes)"
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Payload=json.dumps({"x": "y" * 6_300_000}))
    assert e.value.response["Error"]["Message"] == \
        "Request must be smaller than 6291456 bytes for the InvokeFunction operation"


def test_invoke_async_the_deprecated_form_queues_the_event(retry_server, tmp_path):
    lam = retry_server.client()
    name = async_function(lam)
    out = tmp_path / "calls"
    r = lam.invoke_async(FunctionName=name, InvokeArgs=json.dumps({"path": str(out)}))
    assert r["Status"] == 202 and r["ResponseMetadata"]["HTTPStatusCode"] == 202
    calls = wait_for(lambda: lines(out), "the event to be delivered")
    assert calls[0]["id"] == r["ResponseMetadata"]["RequestId"]
    with pytest.raises(ClientError) as e:
        lam.invoke_async(FunctionName=name, InvokeArgs=b"{not json")
    assert error_code(e) == "InvalidRequestContentException"


@pytest.mark.parametrize("retries, expected_attempts", [(None, 3), (0, 1), (1, 2)])
def test_failed_events_are_retried_then_given_up(retry_server, tmp_path, retries, expected_attempts):
    lam = retry_server.client()
    name = async_function(lam)
    if retries is not None:
        lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=retries)
    out = tmp_path / "calls"
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"path": str(out), "fail": True}))
    rid = r["ResponseMetadata"]["RequestId"]
    wait_for(lambda: re.search(rf"{rid}.*giving up|giving up.*{rid}", retry_server.output()), "the event to be given up")
    calls = lines(out)
    assert len(calls) == expected_attempts and {c["id"] for c in calls} == {rid}


def test_queued_events_survive_kill_9(private_server, tmp_path):
    # A node that can run nothing (every invocation throttled: a backoff,
    # which a restart ends) keeps events queued; after kill -9 a node that
    # can run them delivers them at once. (A function's own failure would
    # wait out its retry delay, restart or not, as on AWS.)
    first = private_server(tmp_path / "data", args=["--max-concurrency", "0"])
    lam = first.client()
    name = async_function(lam)
    out = tmp_path / "calls"
    ids = [lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"path": str(out), "n": i}))
           ["ResponseMetadata"]["RequestId"] for i in range(3)]
    first.kill()
    assert not out.exists()
    second = Server(tmp_path / "data", args=["--isolation", "process"]).start()
    try:
        calls = wait_for(lambda: len(lines(out)) >= 3 and lines(out), "queued events after the restart")
        assert sorted(c["id"] for c in calls) == sorted(ids)
    finally:
        second.stop()


def test_logs_are_stored_and_served_by_the_cloudwatch_logs_api(proc_server, plam):
    name = py_function(plam)
    r1, out = invoke(plam, name)
    stream = out["env"]["AWS_LAMBDA_LOG_STREAM_NAME"]
    r2, _ = invoke(plam, name)
    ids = [r["ResponseMetadata"]["RequestId"] for r in (r1, r2)]
    logs = logs_client(proc_server)
    group = f"/aws/lambda/{name}"

    def stored():
        events = function_log(proc_server, name)
        return events if sum(e["message"].startswith("REPORT") for e in events) == 2 else None

    events = wait_for(stored, "both invocations' log lines")
    messages = [e["message"] for e in events]
    # Every line keeps its newline in its event, as on AWS.
    assert messages.index(f"START RequestId: {ids[0]} Version: $LATEST\n") < messages.index(f"hello from {name}\n")
    assert f"END RequestId: {ids[1]}\n" in messages
    assert {e["logStreamName"] for e in events} == {stream}
    assert [int(e["eventId"]) for e in events] == sorted(int(e["eventId"]) for e in events)
    only_reports = logs.filter_log_events(logGroupName=group, filterPattern="REPORT")["events"]
    assert len(only_reports) == 2 and "Init Duration" in only_reports[0]["message"]
    assert "Init Duration" not in only_reports[1]["message"]
    page = logs.filter_log_events(logGroupName=group, limit=2)
    assert len(page["events"]) == 2 and "nextToken" in page
    rest = logs.filter_log_events(logGroupName=group, nextToken=page["nextToken"])["events"]
    assert [e["message"] for e in page["events"] + rest] == messages

    printed = nimbus_cli(proc_server, "logs", name, "--filter", "hello from").stdout.splitlines()
    assert printed == [f"hello from {name}", f"hello from {name}"]


def test_every_invocation_is_metered(proc_server, plam):
    import sqlite3
    name = py_function(plam)
    ok = [invoke(plam, name)[0]["ResponseMetadata"]["RequestId"] for _ in range(2)]
    plam.update_function_configuration(FunctionName=name, Handler="app.fail")
    failed = invoke(plam, name)[0]["ResponseMetadata"]["RequestId"]
    db = proc_server.data_dir / "metadata.db"

    def records():
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT request_id, version, cold, init_ms, duration_ms, billed_ms, memory_mb, "
                                "max_memory_mb, outcome FROM invocations WHERE function = ? ORDER BY timestamp_ms",
                                (name,)).fetchall()
        return rows if len(rows) == 3 else None

    rows = wait_for(records, "three metering records")
    assert [r[0] for r in rows] == ok + [failed]
    assert [r[2] for r in rows] == [1, 0, 1], "cold, warm, cold again after the configuration change"
    assert rows[0][3] > 0 and rows[1][3] is None
    for r in rows:
        assert r[1] == "$LATEST" and r[6] == 128 and r[7] > 0 and r[5] >= r[4]
    assert [r[8] for r in rows] == ["success", "success", "error"]


NODE_ESM = '''
let count = 0;
export const handler = async (event, context) => {
  count += 1;
  console.log("hello", context.functionName);
  return { event, count, id: context.awsRequestId, remaining: context.getRemainingTimeInMillis() > 0 };
};
export const fail = async () => { throw new TypeError("node failure"); };
'''

NODE_CJS = '''
exports.handler = (event, context, callback) => {
  callback(null, { cjs: true, event, version: context.functionVersion });
};
exports.later = (event, context, callback) => { setTimeout(() => callback(new Error("late failure")), 10); };
'''


@pytest.mark.parametrize("files, handler, check", [
    ({"index.mjs": NODE_ESM}, "index.handler",
     lambda out, rid: out["event"] == {"k": 1} and out["id"] == rid and out["remaining"]),
    ({"lib/app.js": NODE_CJS}, "lib/app.handler",
     lambda out, rid: out == {"cjs": True, "event": {"k": 1}, "version": "$LATEST"}),
])
def test_nodejs_handlers(plam, files, handler, check):
    name = unique_name("node")
    plam.create_function(FunctionName=name, Runtime="nodejs20.x", Handler=handler, Role=ROLE,
                         Code={"ZipFile": make_zip(files)}, Timeout=10)
    r, out = invoke(plam, name, {"k": 1}, LogType="Tail")
    assert "FunctionError" not in r, out
    assert check(out, r["ResponseMetadata"]["RequestId"])
    if handler == "index.handler":
        assert invoke(plam, name, {"k": 1})[1]["count"] == 2, "module state survives warm invokes"
        log = base64.b64decode(r["LogResult"]).decode()
        assert re.search(rf"\tINFO\thello {name}", log), log


@ECHOES
def test_an_event_of_many_socket_buffers_goes_there_and_back_whole(plam, runtime, files, handler):
    # Our runtimes take events and hand back results as frames on a socket
    # whose buffer is a fraction of this: writes wait for room both ways.
    name = unique_name("big")
    plam.create_function(FunctionName=name, Runtime=runtime, Handler=handler, Role=ROLE,
                         Code={"ZipFile": make_zip(files)}, Timeout=10)
    event = {"blob": os.urandom(2_900_000).hex()}
    for _ in range(2):
        r, out = invoke(plam, name, event)
        assert "FunctionError" not in r and out == event


@pytest.mark.parametrize("files, handler, error_type, message", [
    ({"index.mjs": NODE_ESM}, "index.fail", "TypeError", "node failure"),
    ({"lib/app.js": NODE_CJS}, "lib/app.later", "Error", "late failure"),
    ({"index.mjs": NODE_ESM}, "missing.handler", "Runtime.ImportModuleError", None),
    ({"index.mjs": NODE_ESM}, "index.nothing", "Runtime.HandlerNotFound", None),
    ({"index.mjs": "export const handler = ;"}, "index.handler", "Runtime.UserCodeSyntaxError", None),
])
def test_nodejs_errors(plam, files, handler, error_type, message):
    name = unique_name("node")
    plam.create_function(FunctionName=name, Runtime="nodejs20.x", Handler=handler, Role=ROLE,
                         Code={"ZipFile": make_zip(files)}, Timeout=10)
    r, out = invoke(plam, name)
    assert r["FunctionError"] == "Unhandled" and out["errorType"] == error_type, out
    if message:
        assert out["errorMessage"] == message


# AWS's Node runtime model (its runtime interface client): a callback's
# answer waits for the event loop to empty unless told not to, context's
# succeed/fail/done answer at once, a handler's result counts only if it is
# a promise, and a thrown value that is no Error keeps its own type.
NODE_CALLBACKS = '''
const fs = require("fs");
exports.waits = (event, context, callback) => {
  setTimeout(() => fs.appendFileSync(event.marks, "timer\\n"), 300);
  callback(null, { answered: true });
};
exports.hurries = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = false;
  setTimeout(() => {}, 15000);  // past the timeout: an answer that waited for it would be a timeout
  callback(null, { hurried: context.callbackWaitsForEmptyEventLoop });
};
exports.succeeds = (event, context) => { context.succeed({ via: "succeed" }); };
exports.fails = (event, context) => { context.fail(new Error("via fail")); };
exports.returns = (event, context) => ({ ignored: true });
exports.throwsText = async () => { throw "just a string"; };
exports.throwsTextless = async () => { throw Object.create(null); };
'''


@pytest.mark.parametrize("handler, expected", [
    ("app.waits", {"answered": True}),
    ("app.hurries", {"hurried": False}),
    ("app.succeeds", {"via": "succeed"}),
    ("app.returns", None),
    ("app.fails", {"errorType": "Error", "errorMessage": "via fail"}),
    ("app.throwsText", {"errorType": "string", "errorMessage": "just a string", "trace": []}),
    ("app.throwsTextless", {"errorType": "handled"}),
])
def test_nodejs_callbacks_and_context_as_on_aws(plam, tmp_path, handler, expected):
    name = unique_name("nodecb")
    plam.create_function(FunctionName=name, Runtime="nodejs20.x", Handler=handler, Role=ROLE,
                         Code={"ZipFile": make_zip({"app.js": NODE_CALLBACKS})}, Timeout=10)
    marks = tmp_path / "marks"
    r, out = invoke(plam, name, {"marks": str(marks)})
    if "errorType" in (expected or {}):
        assert r["FunctionError"] == "Unhandled"
        assert {k: out[k] for k in expected} == expected, out
    else:
        assert "FunctionError" not in r and out == expected, out
    if handler == "app.waits":
        assert marks.read_text() == "timer\n", "the answer waited for the pending timer"


SDK_APP = '''
import os, sys

def handler(event, context):
    sys.path.insert(0, event["site_packages"])
    import boto3
    from botocore.config import Config
    lam = boto3.client("lambda", config=Config(retries={"max_attempts": 1}))  # endpoint and keys from the environment
    me = lam.get_function_configuration(FunctionName=context.function_name)["FunctionName"]
    identity = boto3.client("sts").get_caller_identity()
    return {"me": me, "key": os.environ["AWS_ACCESS_KEY_ID"], "has_token": bool(os.environ.get("AWS_SESSION_TOKEN")),
            "endpoint": os.environ["AWS_ENDPOINT_URL"],
            "identity": {k: identity[k] for k in ("Account", "Arn", "UserId")}}
'''


def test_sdk_inside_a_function_reaches_nimbus_with_injected_credentials(proc_server, plam):
    import sysconfig
    name = py_function(plam, files={"app.py": SDK_APP}, Timeout=30)
    r, out = invoke(plam, name, {"site_packages": sysconfig.get_paths()["purelib"]})
    assert "FunctionError" not in r, out
    assert out["me"] == name
    assert out["endpoint"] == proc_server.endpoint and out["has_token"]
    assert out["key"].startswith("NSIA") and out["key"] != proc_server.credentials()[0], "session keys, not the node's"
    # STS names the execution role, assumed under the function's name, as Lambda's sessions are.
    identity = out["identity"]
    assert identity["Account"] == ACCOUNT
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/lambda-role/{name}"
    assert re.fullmatch(r"AROA[A-Z2-7]{17}:" + name, identity["UserId"]), identity
    # Invoked by a qualified ARN, the session is still named after the function.
    version = plam.publish_version(FunctionName=name)["Version"]
    r, out = invoke(plam, name, {"site_packages": sysconfig.get_paths()["purelib"]}, Qualifier=version)
    assert "FunctionError" not in r, out
    assert out["identity"]["Arn"] == identity["Arn"]


def test_provided_runtime_with_the_lambda_runtime_crate(plam):
    """A binary built with AWS's `lambda_runtime` crate (examples/rust-hello) as bootstrap."""
    import os
    from conftest import REPO
    binary = os.environ.get("RUST_HELLO_BIN", str(REPO / "target" / "release" / "rust-hello"))
    with open(binary, "rb") as f:
        bootstrap = f.read()
    name = unique_name("rust")
    plam.create_function(FunctionName=name, Runtime="provided.al2023", Handler="unused", Role=ROLE,
                         Code={"ZipFile": make_zip({"bootstrap": bootstrap}, executables={"bootstrap"})})
    r, out = invoke(plam, name, {"hi": 1})
    assert "FunctionError" not in r, out
    env = out.pop("env")
    assert out.pop("pidns").startswith("pid:["), "it names its PID namespace (nimbus bench sums its memory)"
    assert out == {"echo": {"hi": 1}, "request_id": r["ResponseMetadata"]["RequestId"], "arn": arn(name), "function": name}
    assert invoke(plam, name, {"sleep_ms": 1})[1]["env"] == env, "the same warm environment"
    r, out = invoke(plam, name, {"fail": True})
    assert r["FunctionError"] == "Unhandled" and "asked to fail" in out["errorMessage"]


@pytest.mark.parametrize("change", ["configuration", "code", "delete"])
def test_updates_and_deletes_stop_old_environments(plam, change):
    import os
    name = py_function(plam, files={"app.py": "import os\ndef handler(e, c):\n    return os.getpid()\n"})
    pid = invoke(plam, name)[1]
    assert os.path.exists(f"/proc/{pid}")
    if change == "configuration":
        plam.update_function_configuration(FunctionName=name, MemorySize=256)
    elif change == "code":
        plam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 0\n"}))
    else:
        plam.delete_function(FunctionName=name)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
             "the old runtime to exit", timeout=5)


@pytest.mark.parametrize("files, executables", [
    ({"README": "no bootstrap here"}, ()),
    ({"bootstrap": "#!/bin/sh\necho hi\n"}, ()),
])
def test_provided_without_a_usable_bootstrap_is_an_invalid_entrypoint(plam, files, executables):
    name = unique_name("noboot")
    plam.create_function(FunctionName=name, Runtime="provided.al2023", Handler="x", Role=ROLE,
                         Code={"ZipFile": make_zip(files, executables=executables)})
    r, out = invoke(plam, name, LogType="Tail")
    assert r["StatusCode"] == 200 and r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.InvalidEntrypoint"
    assert "Error Type: Runtime.InvalidEntrypoint" in base64.b64decode(r["LogResult"]).decode()


INIT_ERROR_BOOTSTRAP = """#!/usr/bin/python3.11
import json, os, time, urllib.request
body = json.dumps({"errorMessage": "config missing", "errorType": "Custom.InitErr"}).encode()
url = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime/init/error"
urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST",
                       headers={"Lambda-Runtime-Function-Error-Type": "Custom.InitErr"})).read()
print("init error reported", flush=True)
time.sleep(60)
"""


def test_an_init_error_ends_init_though_the_runtime_stays(plam):
    """A runtime that reports an init error and then lingers is not waited
    for until init's time limit: the error is the invocation's at once."""
    name = unique_name("initerr")
    plam.create_function(FunctionName=name, Runtime="provided.al2023", Handler="x", Role=ROLE, Timeout=30,
                         Code={"ZipFile": make_zip({"bootstrap": INIT_ERROR_BOOTSTRAP}, executables={"bootstrap"})})
    r, out = invoke(plam, name, LogType="Tail")
    log = base64.b64decode(r["LogResult"]).decode()
    assert r["FunctionError"] == "Unhandled" and out["errorType"] == "Custom.InitErr", out
    assert "Phase: init\tStatus: error\tError Type: Custom.InitErr" in log, log
    assert "Status: timeout" not in log, log


HEADER_NAMES_BOOTSTRAP = """#!/usr/bin/python3.11
import json, os, urllib.request
api = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime/invocation"
while True:
    with urllib.request.urlopen(f"{api}/next") as r:
        names = [k for k, _ in r.headers.items()]
        request_id = r.headers["lambda-runtime-aws-request-id"]
    urllib.request.urlopen(urllib.request.Request(f"{api}/{request_id}/response", data=json.dumps(names).encode(),
                                                  method="POST")).read()
"""


def test_runtime_api_header_names_are_written_as_aws_writes_them(plam):
    """Hand-written runtimes match `Lambda-Runtime-Aws-Request-Id` as AWS's
    Runtime API writes it, case and all."""
    name = unique_name("hdrs")
    plam.create_function(FunctionName=name, Runtime="provided.al2023", Handler="x", Role=ROLE,
                         Code={"ZipFile": make_zip({"bootstrap": HEADER_NAMES_BOOTSTRAP}, executables={"bootstrap"})})
    names = invoke(plam, name)[1]
    assert {"Lambda-Runtime-Aws-Request-Id", "Lambda-Runtime-Deadline-Ms",
            "Lambda-Runtime-Invoked-Function-Arn"} <= set(names), names


SLOW_INIT = "import time\ntime.sleep(11)\ndef handler(e, c):\n    return 'initialised'\n"


@pytest.mark.parametrize("timeout, succeeds", [(15, True), (3, False)])
def test_init_over_ten_seconds_is_retried_within_the_invoke(plam, timeout, succeeds):
    name = py_function(plam, files={"app.py": SLOW_INIT}, Timeout=timeout)
    r, out = invoke(plam, name, LogType="Tail")
    log = base64.b64decode(r["LogResult"]).decode()
    assert "INIT_REPORT Init Duration: 10000.00 ms\tPhase: init\tStatus: timeout" in log, log
    if succeeds:
        assert "FunctionError" not in r and out == "initialised"
    else:
        assert r["FunctionError"] == "Unhandled" and out["errorType"] == "Sandbox.Timedout"
