"""Scaling: the account's and each function's concurrency, the scaling rate,
provisioned concurrency, and reclaiming idle environments. Functions that
must stay busy wait for a release file the test creates, so that every
"the limit is reached" moment is a state the test observes, not a guess."""

import base64
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, ROLE, Server, error_code, make_zip, settle_changes, unique_name, wait_for

APP = '''
import json, os, time, uuid

ENV_ID = uuid.uuid4().hex
if "INIT_DIR" in os.environ:
    open(os.path.join(os.environ["INIT_DIR"], ENV_ID + "." + os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"]), "w").close()

def handler(event, context):
    started = time.time()
    if event.get("exit"):
        os._exit(3)
    if "started_dir" in event:
        open(os.path.join(event["started_dir"], context.aws_request_id), "w").close()
    while "release" in event and not os.path.exists(event["release"]):
        time.sleep(0.005)
    if "record" in event:
        with open(event["record"], "a") as f:
            f.write(json.dumps({"id": context.aws_request_id}) + "\\n")
    time.sleep(event.get("work", 0))
    return {"env": ENV_ID, "pid": os.getpid(), "start": started, "end": time.time(),
            "init_type": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"]}
'''

FAILING_INIT = "raise RuntimeError('init fails on purpose')\n"


@pytest.fixture
def scaling_server(tmp_path):
    """Starts a process-mode server with the given flags; returns a client
    without retries. Servers stop after the test."""
    started = []

    def start(*args, pool=10):
        server = Server(tmp_path / f"data{len(started)}", args=["--isolation", "process", *args]).start()
        started.append(server)
        start.server = server
        return client(server, pool)

    yield start
    for server in started:
        server.stop()


def client(server, pool=10):
    key, secret = server.credentials()
    # No retries: a throttle must reach the test, not be retried by boto3.
    return settle_changes(boto3.client("lambda", endpoint_url=server.endpoint, region_name=REGION,
                                       aws_access_key_id=key, aws_secret_access_key=secret,
                                       config=Config(retries={"total_max_attempts": 1}, read_timeout=120,
                                                     max_pool_connections=pool)))


def function(lam, files=None, **kw):
    name = unique_name("scale")
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                        Code={"ZipFile": make_zip(files or {"app.py": APP})}, Timeout=60, **kw)
    return name


def invoke(lam, name, event=None, **kw):
    r = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}), **kw)
    return r, json.loads(r["Payload"].read())


def throttle_reason(lam, name, event=None, **kw):
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Payload=json.dumps(event or {}), **kw)
    assert error_code(e) == "TooManyRequestsException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    return e.value.response["Reason"]


class Blocked:
    """`n` invocations held busy inside their handlers until released."""

    def __init__(self, lam, name, n, tmp_path):
        self.started = tmp_path / unique_name("started")
        self.started.mkdir()
        self.release = tmp_path / unique_name("release")
        self.pool = ThreadPoolExecutor(n)
        event = {"started_dir": str(self.started), "release": str(self.release)}
        self.futures = [self.pool.submit(invoke, lam, name, event) for _ in range(n)]
        wait_for(lambda: len(os.listdir(self.started)) == n, f"{n} invocations in their handlers")

    def finish(self):
        self.release.touch()
        results = [f.result(timeout=60) for f in self.futures]
        self.pool.shutdown()
        for r, out in results:
            assert "FunctionError" not in r, out
        return [out for _, out in results]


def test_account_concurrency_is_a_hard_limit(scaling_server, tmp_path):
    lam = scaling_server("--max-concurrency", "3")
    settings = lam.get_account_settings()["AccountLimit"]
    assert settings["ConcurrentExecutions"] == 3
    name, other = function(lam), function(lam)
    held = Blocked(lam, name, 3, tmp_path)
    assert throttle_reason(lam, name) == "ConcurrentInvocationLimitExceeded"
    assert throttle_reason(lam, other) == "ConcurrentInvocationLimitExceeded", "the limit is account-wide"
    outs = held.finish()
    assert len({o["env"] for o in outs}) == 3, "one environment per concurrent invocation"
    r, out = invoke(lam, name)
    assert "FunctionError" not in r and out["env"] in {o["env"] for o in outs}, "a freed slot is usable again"


def test_reserved_concurrency_limits_one_function_and_zero_throttles_all(scaling_server, tmp_path):
    lam = scaling_server()
    name, other = function(lam), function(lam)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    held = Blocked(lam, name, 1, tmp_path)
    assert throttle_reason(lam, name) == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert "FunctionError" not in invoke(lam, other)[0], "other functions are not limited by it"
    held.finish()
    assert "FunctionError" not in invoke(lam, name)[0]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert throttle_reason(lam, name) == "ReservedFunctionConcurrentInvocationLimitExceeded"
    lam.delete_function_concurrency(FunctionName=name)
    assert "FunctionError" not in invoke(lam, name)[0]


def test_a_throttled_async_event_goes_back_to_its_queue(scaling_server, tmp_path):
    lam = scaling_server()
    name = function(lam)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    held = Blocked(lam, name, 1, tmp_path)
    record = tmp_path / "async.jsonl"
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"record": str(record)}))
    assert r["StatusCode"] == 202
    # The event is throttled while the slot is held, and is not lost.
    server = scaling_server.server
    wait_for(lambda: "Rate Exceeded" in server.output() and "will retry" in server.output(),
             "the event to be throttled back into its queue")
    assert not record.exists(), "it did not run while the slot was held"
    held.finish()
    lines = wait_for(lambda: record.exists() and record.read_text().splitlines(), "the throttled event delivered")
    assert [json.loads(x)["id"] for x in lines] == [r["ResponseMetadata"]["RequestId"]]


def test_new_environments_are_limited_by_the_scaling_rate(scaling_server, tmp_path):
    lam = scaling_server("--burst-limit", "2")
    name = function(lam)
    held = Blocked(lam, name, 2, tmp_path)
    assert throttle_reason(lam, name) == "FunctionInvocationRateLimitExceeded"
    held.finish()
    # Warm environments are not new ones: they serve without a token.
    for _ in range(3):
        assert "FunctionError" not in invoke(lam, name)[0]


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_idle_environments_are_reclaimed_after_keep_warm(scaling_server):
    lam = scaling_server("--keep-warm", "1")
    name = function(lam)
    pid = invoke(lam, name)[1]["pid"]
    wait_for(lambda: not alive(pid), "the idle environment reclaimed", timeout=15)
    r, out = invoke(lam, name, LogType="Tail")
    assert out["pid"] != pid
    assert "Init Duration" in base64.b64decode(r["LogResult"]).decode(), "a reclaimed function starts cold"


def test_environments_are_replaced_at_their_maximum_lifetime(scaling_server):
    lam = scaling_server("--max-lifetime", "2")
    name = function(lam)
    pid = invoke(lam, name)[1]["pid"]
    assert invoke(lam, name)[1]["pid"] == pid, "warm within its lifetime"
    wait_for(lambda: not alive(pid), "the environment retired at its lifetime", timeout=15)
    assert invoke(lam, name)[1]["pid"] != pid


def test_memory_pressure_reclaims_the_least_recently_used_idle_environment(scaling_server, tmp_path):
    # A threshold above this machine's memory: every new environment is made under pressure.
    lam = scaling_server("--min-free-memory-mb", str(1 << 40))
    name, other = function(lam), function(lam)
    envs = Blocked(lam, name, 2, tmp_path).finish()
    pids = {o["pid"] for o in envs}
    assert len(pids) == 2 and all(alive(p) for p in pids)
    used = invoke(lam, name)[1]["pid"]
    (older,) = pids - {used}
    invoke(lam, other)
    wait_for(lambda: not alive(older), "the least recently used environment reclaimed")
    assert alive(used), "the more recently used one stays"


def test_provisioned_environments_are_ready_before_the_first_invoke(scaling_server):
    lam = scaling_server()
    name = function(lam)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live",
                                                 ProvisionedConcurrentExecutions=2)
    assert put["Status"] in ("IN_PROGRESS", "READY")
    got = wait_for(lambda: (c := lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live"))
                   ["Status"] == "READY" and c, "provisioned concurrency READY")
    assert got["AllocatedProvisionedConcurrentExecutions"] == 2
    assert got["AvailableProvisionedConcurrentExecutions"] == 2
    for _ in range(3):
        r, out = invoke(lam, name, Qualifier="live", LogType="Tail")
        assert out["init_type"] == "provisioned-concurrency"
        assert "Init Duration" not in base64.b64decode(r["LogResult"]).decode(), "initialized ahead"
    assert invoke(lam, name)[1]["init_type"] == "on-demand", "$LATEST has no provisioned environments"
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    with pytest.raises(ClientError) as e:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert error_code(e) == "ProvisionedConcurrencyConfigNotFoundException"


def test_provisioned_concurrency_moves_with_its_alias(scaling_server):
    """An alias moved to another version keeps its provisioned concurrency
    (the old version's environments go, the new one's are started); a
    deleted alias's environments go with it."""
    lam = scaling_server()
    name = function(lam)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
    ready = lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")["Status"] == "READY"
    wait_for(ready, "provisioned concurrency READY")
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"RELEASE": "2"}})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    wait_for(ready, "provisioned concurrency READY on version 2")
    r, out = invoke(lam, name, Qualifier="live")
    assert (r["ExecutedVersion"], out["init_type"]) == ("2", "provisioned-concurrency")
    assert invoke(lam, name, Qualifier="1")[1]["init_type"] == "on-demand", "version 1's went"
    lam.delete_alias(FunctionName=name, Name="live")
    assert invoke(lam, name, Qualifier="2")[1]["init_type"] == "on-demand", "the alias's went with it"


def test_a_provisioned_environment_that_is_lost_is_replaced(scaling_server, tmp_path):
    """As on AWS, a provisioned environment whose runtime exits is replaced
    by a new one initialized ahead, and the configuration is READY again."""
    lam = scaling_server()
    inits = tmp_path / "inits"
    inits.mkdir()
    name = function(lam, Environment={"Variables": {"INIT_DIR": str(inits)}})
    lam.publish_version(FunctionName=name)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    config = lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    wait_for(lambda: config()["Status"] == "READY", "provisioned concurrency READY")
    [first] = [p.stem for p in inits.iterdir()]
    r = lam.invoke(FunctionName=name, Qualifier="1", Payload=json.dumps({"exit": True}))
    assert r["FunctionError"] == "Unhandled" and b"Runtime.ExitError" in r["Payload"].read()
    made = lambda: sorted(p.name for p in inits.iterdir() if p.stem != first) or None
    [second] = wait_for(made, "a replacement initialized ahead")
    assert second.endswith(".provisioned-concurrency"), second
    got = wait_for(lambda: (c := config())["Status"] == "READY" and c, "provisioned concurrency READY again")
    assert got["AvailableProvisionedConcurrentExecutions"] == 1
    r, out = invoke(lam, name, Qualifier="1", LogType="Tail")
    assert (out["env"], out["init_type"]) == (second.split(".")[0], "provisioned-concurrency")
    assert "Init Duration" not in base64.b64decode(r["LogResult"]).decode()
    assert len(list(inits.iterdir())) == 2, "no on-demand environment was started"


def test_provisioning_a_function_whose_init_fails_reports_failed(scaling_server):
    lam = scaling_server()
    name = function(lam, files={"app.py": FAILING_INIT})
    lam.publish_version(FunctionName=name)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    got = wait_for(lambda: (c := lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1"))
                   ["Status"] != "IN_PROGRESS" and c, "provisioning to finish")
    assert got["Status"] == "FAILED" and "init fails on purpose" in got["StatusReason"], got


def test_a_burst_of_200_parallel_invokes_gets_one_request_per_environment(scaling_server):
    lam = scaling_server(pool=200)
    name = function(lam)
    barrier = threading.Barrier(200)

    def one(_):
        barrier.wait()
        return invoke(lam, name, {"work": 0.05})

    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(one, range(200)))
    for r, out in results:
        assert r["StatusCode"] == 200 and "FunctionError" not in r, out
    by_env = {}
    for _, out in results:
        by_env.setdefault(out["env"], []).append((out["start"], out["end"]))
    for spans in by_env.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end <= start, "an environment served two requests at once"
    assert 1 < len(by_env) <= 200
