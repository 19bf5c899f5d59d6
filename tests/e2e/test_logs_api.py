"""The CloudWatch Logs API (service `logs`) with boto3's logs client and the
aws CLI: log groups and streams (functions' included), PutLogEvents' batch
rules, GetLogEvents' tokens, FilterLogEvents' patterns, retention, and AWS's
errors for bad input, each of which changes nothing."""

import base64
import json
import pathlib
import os
import queue
import shutil
import subprocess
import threading
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import (REGION, Server, aws_client, aws_json, create, error_code, logs_client, make_zip, nimbus_cli,
                      unique_name, wait_for)

DAY_MS = 24 * 3600 * 1000


def now_ms():
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def logs(server):
    return logs_client(server)


def group_with_stream(logs, stream="s"):
    group = f"/nimbus/test/{unique_name('g')}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    return group


def messages(events):
    return [e["message"] for e in events]


def refused(call, code, message=None):
    with pytest.raises(ClientError) as e:
        call()
    assert error_code(e) == code, e.value.response
    if message is not None:
        assert e.value.response["Error"]["Message"] == message
    return e.value.response["Error"]["Message"]


def test_groups_and_streams_are_created_described_and_deleted(logs):
    prefix = f"/nimbus/test/{unique_name('p')}"
    for suffix in ("c", "a", "b"):
        logs.create_log_group(logGroupName=f"{prefix}/{suffix}")
    refused(lambda: logs.create_log_group(logGroupName=f"{prefix}/a"), "ResourceAlreadyExistsException",
            "The specified log group already exists")
    # Deletion protection is not offered: refused, not ignored, and nothing is made.
    refused(lambda: logs.create_log_group(logGroupName=f"{prefix}/protected", deletionProtectionEnabled=True),
            "InvalidParameterException")
    # Nor is another class: it was made, and described as STANDARD.
    refused(lambda: logs.create_log_group(logGroupName=f"{prefix}/ia", logGroupClass="INFREQUENT_ACCESS"),
            "InvalidParameterException",
            "Log group class INFREQUENT_ACCESS is not offered by this Nimbus node: its groups are STANDARD.")

    first = logs.describe_log_groups(logGroupNamePrefix=prefix, limit=2)
    assert [g["logGroupName"] for g in first["logGroups"]] == [f"{prefix}/a", f"{prefix}/b"]
    rest = logs.describe_log_groups(logGroupNamePrefix=prefix, limit=2, nextToken=first["nextToken"])
    assert [g["logGroupName"] for g in rest["logGroups"]] == [f"{prefix}/c"] and "nextToken" not in rest
    group = first["logGroups"][0]
    assert group["arn"] == f"{group['logGroupArn']}:*" and ":log-group:" in group["logGroupArn"]
    assert "retentionInDays" not in group and group["creationTime"] > now_ms() - 60_000
    by_pattern = logs.describe_log_groups(logGroupNamePattern=prefix.rsplit("/", 1)[1])["logGroups"]
    assert len(by_pattern) == 3

    g = f"{prefix}/a"
    for name in ("s-old", "s-new", "s-empty"):
        logs.create_log_stream(logGroupName=g, logStreamName=name)
    refused(lambda: logs.create_log_stream(logGroupName=g, logStreamName="s-old"),
            "ResourceAlreadyExistsException", "The specified log stream already exists")
    refused(lambda: logs.create_log_stream(logGroupName=f"{prefix}/none", logStreamName="s"),
            "ResourceNotFoundException", "The specified log group does not exist.")
    t = now_ms()
    logs.put_log_events(logGroupName=g, logStreamName="s-old", logEvents=[{"timestamp": t - 5000, "message": "o"}])
    logs.put_log_events(logGroupName=g, logStreamName="s-new", logEvents=[{"timestamp": t, "message": "n"}])

    by_name = logs.describe_log_streams(logGroupName=g)["logStreams"]
    assert [s["logStreamName"] for s in by_name] == ["s-empty", "s-new", "s-old"]
    latest = logs.describe_log_streams(logGroupName=g, orderBy="LastEventTime", descending=True)["logStreams"]
    assert [s["logStreamName"] for s in latest] == ["s-new", "s-old", "s-empty"]
    assert latest[0]["lastEventTimestamp"] == t and latest[1]["firstEventTimestamp"] == t - 5000
    assert "lastEventTimestamp" not in latest[2]
    paged = logs.get_paginator("describe_log_streams").paginate(
        logGroupIdentifier=group["logGroupArn"], PaginationConfig={"PageSize": 1})
    assert [s["logStreamName"] for page in paged for s in page["logStreams"]] == ["s-empty", "s-new", "s-old"]
    assert [s["logStreamName"] for s in logs.describe_log_streams(
        logGroupName=g, logStreamNamePrefix="s-n")["logStreams"]] == ["s-new"]

    refused(lambda: logs.describe_log_streams(logGroupName=g, orderBy="LastEventTime", logStreamNamePrefix="s"),
            "InvalidParameterException", "Cannot order by LastEventTime with a logStreamNamePrefix.")
    message = refused(lambda: logs.describe_log_groups(limit=51), "InvalidParameterException")
    assert message == ("1 validation error detected: Value '51' at 'limit' failed to satisfy constraint: "
                       "Member must have value less than or equal to 50")
    refused(lambda: logs.describe_log_groups(logGroupNamePrefix=prefix, logGroupNamePattern="x"),
            "InvalidParameterException")
    refused(lambda: logs.create_log_group(logGroupName="bad name!"), "InvalidParameterException")
    refused(lambda: logs.describe_log_streams(logGroupName=f"{prefix}/none"), "ResourceNotFoundException")

    logs.delete_log_stream(logGroupName=g, logStreamName="s-old")
    refused(lambda: logs.delete_log_stream(logGroupName=g, logStreamName="s-old"), "ResourceNotFoundException",
            "The specified log stream does not exist.")
    logs.delete_log_group(logGroupName=g)
    refused(lambda: logs.delete_log_group(logGroupName=g), "ResourceNotFoundException")
    refused(lambda: logs.get_log_events(logGroupName=g, logStreamName="s-new"), "ResourceNotFoundException")
    assert len(logs.describe_log_groups(logGroupNamePrefix=prefix)["logGroups"]) == 2


def test_put_log_events_follows_the_batch_rules(logs):
    group = group_with_stream(logs)
    t = now_ms()

    def put(events, **kw):
        return logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=events, **kw)

    def stored():
        return messages(logs.get_log_events(logGroupName=group, logStreamName="s", startFromHead=True)["events"])

    batch = [
        {"timestamp": t - 15 * DAY_MS, "message": "too old"},
        {"timestamp": t - 1000, "message": "kept 1"},
        {"timestamp": t, "message": "kept 2"},
        {"timestamp": t + 3 * 3600 * 1000, "message": "too new"},
    ]
    # Sequence tokens are accepted and ignored, as AWS now does.
    out = put(batch, sequenceToken="whatever")
    assert out["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 1, "tooNewLogEventStartIndex": 3}
    assert out["nextSequenceToken"]
    assert stored() == ["kept 1", "kept 2"]

    # Each refused batch gets AWS's error and stores nothing.
    unsorted = [{"timestamp": t, "message": "b"}, {"timestamp": t - 1, "message": "a"}]
    refused(lambda: put(unsorted), "InvalidParameterException",
            "Log events in a single PutLogEvents request must be in chronological order.")
    span = [{"timestamp": t - 2 * DAY_MS, "message": "a"}, {"timestamp": t, "message": "b"}]
    refused(lambda: put(span), "InvalidParameterException",
            "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.")
    big = [{"timestamp": t, "message": "x" * (1_048_576 - 26)}, {"timestamp": t, "message": "y"}]
    refused(lambda: put(big), "InvalidParameterException", "Upload too large: 1048603 bytes exceeds limit of 1048576")
    many = [{"timestamp": t, "message": "m"}] * 10_001
    message = refused(lambda: put(many), "InvalidParameterException")
    assert "at 'logEvents' failed to satisfy constraint: Member must have length less than or equal to 10000" in message
    refused(lambda: logs.put_log_events(logGroupName=group, logStreamName="none", logEvents=batch[1:2]),
            "ResourceNotFoundException", "The specified log stream does not exist.")
    assert stored() == ["kept 1", "kept 2"]

    # Exactly 1 MiB (each event counted with 26 bytes) and 10,000 events are accepted.
    full = [{"timestamp": t, "message": "z" * (104 - 26)}] * 10_000
    assert sum(len(e["message"]) + 26 for e in full) <= 1_048_576
    assert "rejectedLogEventsInfo" not in put(full)

    # With a retention, events older than it are expired, not stored.
    logs.put_retention_policy(logGroupName=group, retentionInDays=1)
    old = [{"timestamp": t - 2 * DAY_MS, "message": "expired"}, {"timestamp": t - 3000, "message": "kept 3"}]
    assert put(old)["rejectedLogEventsInfo"] == {"expiredLogEventEndIndex": 1}
    refused(lambda: logs.put_retention_policy(logGroupName=group, retentionInDays=2), "InvalidParameterException")
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["retentionInDays"] == 1


def test_get_log_events_pages_forward_and_backward_with_aws_tokens(server, logs):
    group = group_with_stream(logs)
    t = now_ms() - 60_000
    logs.put_log_events(logGroupName=group, logStreamName="s",
                        logEvents=[{"timestamp": t + i, "message": f"e{i}"} for i in range(25)])

    def get(**kw):
        return logs.get_log_events(logGroupName=group, logStreamName="s", limit=10, **kw)

    # Without a token: the newest events; from the head: the oldest.
    assert messages(get()["events"]) == [f"e{i}" for i in range(15, 25)]
    page = get(startFromHead=True)
    assert messages(page["events"]) == [f"e{i}" for i in range(10)]
    assert page["nextForwardToken"].startswith("f/") and page["nextBackwardToken"].startswith("b/")
    seen = messages(page["events"])
    while True:
        token = page["nextForwardToken"]
        page = get(startFromHead=True, nextToken=token)
        if not page["events"]:
            # At the end the token given is the token returned.
            assert page["nextForwardToken"] == token
            break
        seen += messages(page["events"])
    assert seen == [f"e{i}" for i in range(25)]

    # Backward from the end, down to the start.
    page = get()
    back = messages(page["events"])
    while True:
        token = page["nextBackwardToken"]
        page = get(nextToken=token)
        if not page["events"]:
            assert page["nextBackwardToken"] == token
            break
        back = messages(page["events"]) + back
    assert back == [f"e{i}" for i in range(25)]

    window = logs.get_log_events(logGroupName=group, logStreamName="s", startTime=t + 5, endTime=t + 8,
                                 startFromHead=True)
    assert messages(window["events"]) == ["e5", "e6", "e7"]
    refused(lambda: get(nextToken="f/garbage"), "InvalidParameterException")

    code, out, err = aws_json(server, "logs", "get-log-events", "--log-group-name", group, "--log-stream-name", "s",
                                   "--start-from-head", "--limit", "3")
    assert code == 0, err
    assert messages(out["events"]) == ["e0", "e1", "e2"]

    # Following an empty stream: its forward token sees what is put later.
    empty = group_with_stream(logs)
    token = logs.get_log_events(logGroupName=empty, logStreamName="s")["nextForwardToken"]
    logs.put_log_events(logGroupName=empty, logStreamName="s", logEvents=[{"timestamp": now_ms(), "message": "late"}])
    page = logs.get_log_events(logGroupName=empty, logStreamName="s", nextToken=token, startFromHead=True)
    assert messages(page["events"]) == ["late"]


def test_filter_log_events_speaks_the_filter_pattern_syntax(server, logs):
    group = group_with_stream(logs, "app")
    logs.create_log_stream(logGroupName=group, logStreamName="web")
    t = now_ms() - 60_000
    app = [
        "ERROR disk full",
        "WARN disk slow",
        "INFO all good",
        "ERROR Exiting now",
        json.dumps({"level": "ERROR", "latency": 150, "user": {"id": "u-1"}}),
        json.dumps({"level": "INFO", "latency": 50, "user": {"id": "u-2"}}),
    ]
    web = ['127.0.0.1 frank "GET /index.html HTTP/1.0" 404 1534',
           '10.0.0.2 alice "GET /ok HTTP/1.0" 200 99']
    logs.put_log_events(logGroupName=group, logStreamName="app",
                        logEvents=[{"timestamp": t + i, "message": m} for i, m in enumerate(app)])
    logs.put_log_events(logGroupName=group, logStreamName="web",
                        logEvents=[{"timestamp": t + 100 + i, "message": m} for i, m in enumerate(web)])

    def matched(pattern, **kw):
        return messages(logs.filter_log_events(logGroupName=group, filterPattern=pattern, **kw)["events"])

    assert len(matched("")) == 8
    assert matched("ERROR") == ["ERROR disk full", "ERROR Exiting now", app[4]]
    assert matched("ERROR -Exiting") == ["ERROR disk full", app[4]]
    assert matched("?WARN ?INFO") == ["WARN disk slow", "INFO all good", app[5]]
    assert matched('"disk full"') == ["ERROR disk full"]
    assert matched('{ $.level = "ERROR" }') == [app[4]]
    assert matched("{ $.latency > 100 }") == [app[4]]
    assert matched('{ $.latency < 100 || $.user.id = "u-1" }') == [app[4], app[5]]
    assert matched('{ $.level = "INFO" && $.latency > 100 }') == []
    assert matched("[ip, user, request, status = 404, bytes > 1000]") == [web[0]]
    assert matched("[..., status = 2*, bytes]") == [web[1]]
    assert matched("ERROR", logStreamNames=["web"]) == []
    assert matched("", logStreamNamePrefix="we") == web
    assert matched("", startTime=t + 1, endTime=t + 2) == ["WARN disk slow", "INFO all good"]

    for bad in ['{ $.level = "ERROR"', "{ level = 1 }", '"unterminated', "[a, , b]"]:
        refused(lambda: matched(bad), "InvalidParameterException", "Invalid filter pattern")
    refused(lambda: logs.filter_log_events(logGroupName=group, logStreamNames=["app"], logStreamNamePrefix="a"),
            "InvalidParameterException")
    refused(lambda: logs.filter_log_events(logGroupName=group + "-none"), "ResourceNotFoundException")

    # Pages: every event exactly once, in time order.
    paginator = logs.get_paginator("filter_log_events")
    pages = list(paginator.paginate(logGroupName=group, PaginationConfig={"PageSize": 3}))
    assert len(pages) >= 3
    assert [m for p in pages for m in messages(p["events"])] == app + web
    code, out, err = aws_json(server, "logs", "filter-log-events", "--log-group-name", group,
                                   "--filter-pattern", '{ $.latency > 100 }')
    assert code == 0, err
    assert messages(out["events"]) == [app[4]]
    assert out["events"][0]["logStreamName"] == "app"


def test_function_logs_are_groups_and_streams(server, lam, logs):
    name = unique_name("logsfn")
    create(lam, name)
    lam.invoke(FunctionName=name, Payload=b"{}")
    group = f"/aws/lambda/{name}"

    def streams():
        try:
            return logs.describe_log_streams(logGroupName=group)["logStreams"]
        except logs.exceptions.ResourceNotFoundException:
            return None

    stream = wait_for(streams, "the function's log stream")[0]
    assert stream["lastEventTimestamp"] >= stream["firstEventTimestamp"]
    code, out, err = aws_json(server, "logs", "describe-log-groups", "--log-group-name-prefix", group)
    assert code == 0, err
    assert [g["logGroupName"] for g in out["logGroups"]] == [group]
    def through_report():
        events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"],
                                     startFromHead=True)["events"]
        return events if any(e["message"].startswith("REPORT") for e in events) else None

    events = wait_for(through_report, "the REPORT line")
    # A cold start opens with INIT_START, naming the runtime version the
    # function's configuration names (log readers count cold starts by it).
    arn = lam.get_function_configuration(FunctionName=name)["RuntimeVersionConfig"]["RuntimeVersionArn"]
    assert events[0]["message"] == f"INIT_START Runtime Version: python:3.11.v1\tRuntime Version ARN: {arn}\n"
    assert events[1]["message"].startswith("START RequestId: ")
    code, out, err = aws_json(server, "logs", "filter-log-events", "--log-group-name", group,
                              "--filter-pattern", "REPORT")
    assert code == 0, err
    assert len(out["events"]) == 1 and "Billed Duration" in out["events"][0]["message"]
    # A warm invoke's lines have none.
    lam.invoke(FunctionName=name, Payload=b"{}")
    reports = wait_for(lambda: (lambda e: e if len(e) == 2 else None)(
        logs.filter_log_events(logGroupName=group, filterPattern="REPORT")["events"]), "the second REPORT")
    starts = logs.filter_log_events(logGroupName=group, filterPattern='"INIT_START"')["events"]
    assert len(reports) == 2 and len(starts) == 1, starts


def function_events(logs, name, *wanted):
    """The events of function `name`'s log group once a message starting
    with each of `wanted` is among them, else None (the group too may not
    be there yet)."""
    try:
        events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
    except logs.exceptions.ResourceNotFoundException:
        return None
    got = messages(events)
    return events if all(any(m.startswith(w) for m in got) for w in wanted) else None


def test_start_is_dated_when_the_invocation_began(lam, logs):
    """It was dated by the first line printed (or the end, with none), so
    a reader asking for an invocation's start time missed its START."""
    name = unique_name("startfn")
    create(lam, name, make_zip({"app.py": "import time\ndef handler(e, c):\n    time.sleep(1)\n    print('later')\n"}))
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
    lam.invoke(FunctionName=name, Payload=b"{}")
    events = wait_for(lambda: function_events(logs, name, "REPORT"), "the REPORT line")
    start = next(e for e in events if e["message"].startswith("START"))
    later = next(e for e in events if e["message"] == "later\n")
    assert later["timestamp"] - start["timestamp"] >= 1000, (start, later)


HELD = """
import boto3
def handler(event, context):
    print("early", flush=True)
    sqs = boto3.client("sqs")
    for _ in range(25):
        if sqs.receive_message(QueueUrl=event["release"], WaitTimeSeconds=1).get("Messages"):
            break
    print("late")
"""


def test_a_running_invocations_output_is_readable_before_it_ends(server, lam, logs):
    """It was stored only once the invocation ended: `nimbus logs --follow`,
    StartLiveTail and the console showed nothing of a long invocation."""
    name = unique_name("held")
    create(lam, name, make_zip({"app.py": HELD}), Timeout=60)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
    sqs = aws_client(server, "sqs")
    release = sqs.create_queue(QueueName=unique_name("release"))["QueueUrl"]
    done = queue.Queue()
    caller = threading.Thread(target=lambda: done.put(lam.invoke(FunctionName=name, LogType="Tail",
                                                                 Payload=json.dumps({"release": release}))))
    caller.start()

    def seen(*wanted):
        events = function_events(logs, name, *wanted)
        return events and messages(events)
    try:
        so_far = wait_for(lambda: seen("START", "early\n"), "the running invocation's first lines")
        assert done.empty() and not any(m.startswith("REPORT") for m in so_far), so_far
    finally:
        sqs.send_message(QueueUrl=release, MessageBody="go")
        caller.join()
    r = done.get()
    assert "FunctionError" not in r, r["Payload"].read()
    everything = wait_for(lambda: seen("REPORT"), "the REPORT line")
    assert [m.split(" ")[0] for m in everything if not m.startswith(("INIT_START",))] == [
        "START", "early\n", "late\n", "END", "REPORT"], everything
    tail = base64.b64decode(r["LogResult"]).decode()
    assert "START RequestId" in tail and "early" in tail and "late" in tail, "the tail is the whole invocation's"


def test_retention_removes_expired_events_without_being_asked(logs):
    group = group_with_stream(logs)
    t = now_ms()
    # One batch may span at most 24 hours.
    for age, message in ((3 * DAY_MS, "three days old"), (2 * DAY_MS, "two days old"), (0, "fresh")):
        logs.put_log_events(logGroupName=group, logStreamName="s",
                            logEvents=[{"timestamp": t - age, "message": message}])

    def left():
        return messages(logs.filter_log_events(logGroupName=group)["events"])

    assert left() == ["three days old", "two days old", "fresh"]
    logs.put_retention_policy(logGroupName=group, retentionInDays=1)
    wait_for(lambda: left() == ["fresh"], "the expired events to be removed")
    logs.delete_retention_policy(logGroupName=group)
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]


def test_the_nodes_log_retention_holds_without_any_invocation(tmp_path):
    # --log-retention-days is the node's overall limit, whatever writes the lines: here only PutLogEvents.
    s = Server(tmp_path / "data", args=("--isolation", "process", "--log-retention-days", "1")).start()
    try:
        logs = logs_client(s)
        group = group_with_stream(logs)
        t = now_ms()
        for age, message in ((2 * DAY_MS, "two days old"), (0, "fresh")):
            r = logs.put_log_events(logGroupName=group, logStreamName="s",
                                    logEvents=[{"timestamp": t - age, "message": message}])
            assert "rejectedLogEventsInfo" not in r, r
        # The node prunes at start and then hourly; a restart stands in for the hour.
        s.stop()
        s.start()
        logs = logs_client(s)
        wait_for(lambda: messages(logs.filter_log_events(logGroupName=group)["events"]) == ["fresh"],
                 "the line past the node's retention to be pruned", timeout=30)
    finally:
        s.stop()


def tail_client(server):
    """A logs client for StartLiveTail. Its model prefixes the host with
    `stream-`; a local endpoint has no such name, so the prefix is turned off
    (or set AWS_DISABLE_HOST_PREFIX_INJECTION=true for the aws CLI)."""
    key, secret = server.credentials()
    return boto3.client("logs", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret,
                        config=Config(inject_host_prefix=False, read_timeout=20, retries={"max_attempts": 1}))


def test_start_live_tail_streams_the_matching_events_as_they_are_stored(server, logs):
    group = group_with_stream(logs)
    arn = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["logGroupArn"]
    client = tail_client(server)
    logs.put_log_events(logGroupName=group, logStreamName="s",
                        logEvents=[{"timestamp": now_ms(), "message": "ERROR before"}])
    resp = client.start_live_tail(logGroupIdentifiers=[arn], logEventFilterPattern="ERROR")
    stream = iter(resp["responseStream"])
    start = next(stream)["sessionStart"]
    assert start["logGroupIdentifiers"] == [arn] and start["logEventFilterPattern"] == "ERROR"
    # A quiet session still gets its update every second, empty (so clients' read timeouts hold).
    assert next(stream)["sessionUpdate"]["sessionResults"] == []
    t = now_ms()
    logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=[
        {"timestamp": t, "message": "INFO skipped"}, {"timestamp": t, "message": "ERROR after"}])
    update = next(u for u in (f["sessionUpdate"] for f in stream) if u["sessionResults"])
    assert update["sessionMetadata"] == {"sampled": False}
    assert [(r["message"], r["logStreamName"], r["logGroupIdentifier"]) for r in update["sessionResults"]] == [
        ("ERROR after", "s", arn)]
    resp["responseStream"].close()

    refused(lambda: client.start_live_tail(logGroupIdentifiers=[arn + "-none"]), "ResourceNotFoundException")
    refused(lambda: client.start_live_tail(logGroupIdentifiers=[arn], logEventFilterPattern="{ bad"),
            "InvalidParameterException", "Invalid filter pattern")
    other = logs.describe_log_groups(logGroupNamePrefix=group_with_stream(logs))["logGroups"][0]["logGroupArn"]
    refused(lambda: client.start_live_tail(logGroupIdentifiers=[arn, other], logStreamNames=["s"]),
            "InvalidParameterException")
    # DescribeLogGroups' own filters: the groups named, and the class (every group here is STANDARD).
    named = logs.describe_log_groups(logGroupIdentifiers=[other, group])["logGroups"]
    assert sorted(g["logGroupArn"] for g in named) == sorted([arn, other])
    assert logs.describe_log_groups(logGroupClass="INFREQUENT_ACCESS")["logGroups"] == []


def test_aws_cli_start_live_tail_prints_new_events(server, logs):
    group = group_with_stream(logs)
    arn = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["logGroupArn"]
    key, secret = server.credentials()
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION=REGION,
               AWS_PAGER="", AWS_DISABLE_HOST_PREFIX_INJECTION="true")
    tail = subprocess.Popen([shutil.which("aws"), "--endpoint-url", server.endpoint, "logs", "start-live-tail",
                             "--log-group-identifiers", arn, "--log-event-filter-pattern", "tailed"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in tail.stdout], daemon=True).start()
    try:
        # The session starts at some point after the command does: write
        # until a line comes through.
        deadline = time.monotonic() + 30
        printed = None
        while printed is None and time.monotonic() < deadline:
            logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=[
                {"timestamp": now_ms(), "message": "not this one"}, {"timestamp": now_ms(), "message": "tailed line"}])
            try:
                printed = lines.get(timeout=0.5)
            except queue.Empty:
                assert tail.poll() is None, tail.stderr.read()
        assert printed == "tailed line\n"
    finally:
        tail.terminate()
        tail.wait(timeout=10)


def high_water_kib(server):
    """The node's peak resident memory so far (VmHWM)."""
    status = (pathlib.Path("/proc") / str(server.proc.pid) / "status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def test_pages_of_large_events_hold_one_page_and_a_costly_pattern_pages_by_time(private_server):
    node = private_server()
    logs = logs_client(node)
    group, stream = group_with_stream(logs), "s"
    # 48 events of 1 MB, of 500,000 fields each ("a a a ...").
    big = ("a " * 524_288)[:1_048_576 - 26]
    start = now_ms() - 1000
    for i in range(48):
        logs.put_log_events(logGroupName=group, logStreamName=stream,
                            logEvents=[{"timestamp": start + i, "message": big}])
    before = high_water_kib(node)
    page = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    # A page is 1 MB, and the node read about that much to give it, not all 48 MB.
    assert len(page["events"]) == 1
    assert high_water_kib(node) - before < 16 * 1024, (before, high_water_kib(node))

    # The conditions after the first hold at every field of an event, so
    # matching tries each at each field, and one event would cost seconds:
    # the tries are bounded, a page ends when its time does, and the token
    # goes on from there.
    conditions = ", ".join(f"f{i}=a" for i in range(40))
    pattern = f"[first=zz, {conditions}, ...]"
    pages, token, seen = 0, None, []
    while True:
        kw = {"nextToken": token} if token else {}
        out = logs.filter_log_events(logGroupName=group, filterPattern=pattern, **kw)
        pages, seen, token = pages + 1, seen + out["events"], out.get("nextToken")
        if not token:
            break
    assert seen == [] and pages > 1


def test_live_tails_are_limited_to_fifteen_and_a_closed_one_frees_its_place(private_server):
    """Each open session is woken at every commit of events: at most 15 at
    once, as on AWS. A client that goes away gives its place back, though
    nothing was ever sent to it (its pattern matches nothing)."""
    node = private_server()
    logs = aws_client(node, "logs")
    group = group_with_stream(logs)
    arn = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["logGroupArn"]
    key, secret = node.credentials()
    tail_client = boto3.client("logs", endpoint_url=node.endpoint, region_name=REGION, aws_access_key_id=key,
                               aws_secret_access_key=secret,
                               config=Config(inject_host_prefix=False, read_timeout=20, retries={"max_attempts": 1},
                                             max_pool_connections=20))

    def start():
        resp = tail_client.start_live_tail(logGroupIdentifiers=[arn], logEventFilterPattern="NEVER")
        assert "sessionStart" in next(iter(resp["responseStream"]))
        return resp["responseStream"]

    sessions = [start() for _ in range(15)]
    assert "15 concurrent Live Tail sessions" in refused(start, "LimitExceededException")
    sessions.pop().close()

    def another():
        try:
            sessions.append(start())
            return True
        except ClientError as e:
            assert e.response["Error"]["Code"] == "LimitExceededException"
            return False
    wait_for(another, "the closed session's place to come back", timeout=30)
    for s in sessions:
        s.close()


def test_log_lines_stop_at_the_disk_floor_and_nothing_else_does(tmp_path):
    # A floor above any disk's free space: as if the disk were nearly full.
    s = Server(tmp_path / "data", args=("--log-disk-floor-mb", str(1 << 40))).start()
    try:
        lam, logs = s.client(), logs_client(s)
        name = unique_name("floor")
        create(lam, name)
        lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
        r = lam.invoke(FunctionName=name, Payload=b"{}")
        assert "FunctionError" not in r, r["Payload"].read()
        # Its record is stored (usage counts it); its lines are not.
        wait_for(lambda: json.loads(nimbus_cli(s, "usage", "--json", "--function", name).stdout)["requests"] == 1,
                 "the invocation's record")
        assert logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{name}")["logGroups"] == []
        logs.create_log_group(logGroupName="/app/floor")
        logs.create_log_stream(logGroupName="/app/floor", logStreamName="s")
        with pytest.raises(ClientError):
            logs.put_log_events(logGroupName="/app/floor", logStreamName="s",
                                logEvents=[{"timestamp": int(time.time() * 1000), "message": "x"}])
        assert "the data directory's disk is nearly full" in s.output()
    finally:
        s.stop()


def test_an_open_live_tail_does_not_hold_a_graceful_stop(private_server):
    """SIGTERM finishes what is in flight and exits 0: a live tail, which
    would otherwise last three hours, ends when the stop begins."""
    import signal
    s = private_server()
    logs = logs_client(s)
    group = group_with_stream(logs)
    arn = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["logGroupArn"]
    stream = iter(tail_client(s).start_live_tail(logGroupIdentifiers=[arn])["responseStream"])
    assert "sessionStart" in next(stream)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=30) == 0, s.output()[-3000:]
