"""Where asynchronous results go, end to end: OnSuccess and OnFailure
destinations configured with boto3 and the aws CLI receive AWS's
invocation record (a destination function is invoked asynchronously with
it), MaximumRetryAttempts and MaximumEventAgeInSeconds decide the
condition, bucket notifications get the same, destination types this node
does not offer are refused, and kill -9 loses no event: each ends in
success or a destination.

Functions run with process isolation so that they can write what they
receive into the test's directory."""

import datetime
import json
import os
import re
import subprocess
import shutil

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import (ACCOUNT, REGION, REPO, ROLE, Server, arn, aws_client, error_code, make_zip, sqs_client,
                      unique_name, wait_for)
from doc_blocks import code_blocks

# Notes each run in `calls`, fails when asked, and returns what it was sent, doubled.
SOURCE = '''
import json, os, time

def handler(event, context):
    with open(event["calls"], "a") as f:
        f.write(context.aws_request_id + "\\n")
    if event.get("hold") and not os.path.exists(event["hold"]):
        open(event["hold"], "w").close()
        time.sleep(30)
    if event.get("fail"):
        raise RuntimeError("failing on purpose")
    return {"doubled": event.get("n", 0) * 2}
'''

# A destination: appends every event it gets to the file in $RECORDS.
RECORDER = '''
import json, os

def handler(event, context):
    with open(os.environ["RECORDS"], "a") as f:
        f.write(json.dumps(event) + "\\n")
'''

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def start(data_dir, *args):
    return Server(data_dir, args=["--isolation", "process", *args]).start()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = start(tmp_path_factory.mktemp("destinations") / "data", "--async-retry-delay", "0")
    yield s
    s.stop()


def function(server, code, **kw):
    name = unique_name("dst")
    server.client().create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                                     Code={"ZipFile": make_zip({"app.py": code})}, Timeout=60, **kw)
    return name


def recorder(server, path):
    return function(server, RECORDER, Environment={"Variables": {"RECORDS": str(path)}})


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def records(path, n, timeout=30):
    return wait_for(lambda: len(lines(path)) >= n and lines(path), f"{n} record(s) in {path.name}", timeout)


def send(lam, name, **event):
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(event))
    assert r["StatusCode"] == 202
    return r["ResponseMetadata"]["RequestId"]


def test_on_success_a_function_gets_the_record(srv, tmp_path):
    lam = srv.client()
    dest_records = tmp_path / "records"
    source, dest = function(srv, SOURCE), recorder(srv, dest_records)
    lam.put_function_event_invoke_config(FunctionName=source,
                                         DestinationConfig={"OnSuccess": {"Destination": arn(dest)}})
    event = {"calls": str(tmp_path / "calls"), "n": 21}
    rid = send(lam, source, **event)
    (record,) = records(dest_records, 1)
    assert set(record) == {"version", "timestamp", "requestContext", "requestPayload", "responseContext",
                           "responsePayload"}
    assert record["version"] == "1.0" and re.fullmatch(TIMESTAMP, record["timestamp"])
    assert record["requestContext"] == {"requestId": rid, "functionArn": arn(source, "$LATEST"),
                                        "condition": "Success", "approximateInvokeCount": 1}
    assert record["requestPayload"] == event
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"doubled": 42}

    # Through an alias: its own configuration, the alias in the ARN, the version that ran.
    version = lam.publish_version(FunctionName=source)["Version"]
    lam.create_alias(FunctionName=source, Name="live", FunctionVersion=version)
    lam.put_function_event_invoke_config(FunctionName=source, Qualifier="live",
                                         DestinationConfig={"OnSuccess": {"Destination": arn(dest)}})
    rid = lam.invoke(FunctionName=source, Qualifier="live", InvocationType="Event",
                     Payload=json.dumps(event))["ResponseMetadata"]["RequestId"]
    record = records(dest_records, 2)[1]
    assert record["requestContext"]["requestId"] == rid
    assert record["requestContext"]["functionArn"] == arn(source, "live")
    assert record["responseContext"]["executedVersion"] == version
    # Successes never go to the failure destination: the calls file saw each run once.
    assert len((tmp_path / "calls").read_text().split()) == 2


def test_on_failure_a_function_gets_the_record_once_retries_are_exhausted(srv, tmp_path):
    lam = srv.client()
    dest_records, calls = tmp_path / "records", tmp_path / "calls"
    source, dest = function(srv, SOURCE), recorder(srv, dest_records)
    lam.put_function_event_invoke_config(
        FunctionName=source, MaximumRetryAttempts=1,
        DestinationConfig={"OnSuccess": {"Destination": arn(dest)}, "OnFailure": {"Destination": arn(dest)}})
    event = {"calls": str(calls), "fail": True}
    rid = send(lam, source, **event)
    (record,) = records(dest_records, 1)
    assert calls.read_text().split() == [rid, rid], "the first attempt and one retry"
    assert record["requestContext"] == {"requestId": rid, "functionArn": arn(source, "$LATEST"),
                                        "condition": "RetriesExhausted", "approximateInvokeCount": 2}
    assert record["requestPayload"] == event
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["responsePayload"]["errorMessage"] == "failing on purpose"
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert len(lines(dest_records)) == 1


def test_reserved_concurrency_0_sends_events_straight_to_the_failure_destination(srv, tmp_path):
    lam = srv.client()
    dest_records, calls = tmp_path / "records", tmp_path / "calls"
    source, dest = function(srv, SOURCE), recorder(srv, dest_records)
    lam.put_function_event_invoke_config(FunctionName=source,
                                         DestinationConfig={"OnFailure": {"Destination": arn(dest)}})
    lam.put_function_concurrency(FunctionName=source, ReservedConcurrentExecutions=0)
    rid = send(lam, source, calls=str(calls))
    (record,) = records(dest_records, 1)
    assert record["requestContext"] == {"requestId": rid, "functionArn": arn(source, "$LATEST"),
                                        "condition": "RetriesExhausted", "approximateInvokeCount": 0}
    # It never ran, so there is no response to report.
    assert "responseContext" not in record and "responsePayload" not in record
    assert not calls.exists()


def test_an_event_too_old_for_its_next_attempt_is_event_age_exceeded(tmp_path):
    # AWS's retry delay (a minute) on a one-minute maximum age: after the
    # first failure no retry can come in time, so the event ends at once.
    s = start(tmp_path / "data")
    try:
        lam = s.client()
        dest_records, calls = tmp_path / "records", tmp_path / "calls"
        source, dest = function(s, SOURCE), recorder(s, dest_records)
        lam.put_function_event_invoke_config(FunctionName=source, MaximumEventAgeInSeconds=60,
                                             DestinationConfig={"OnFailure": {"Destination": arn(dest)}})
        rid = send(lam, source, calls=str(calls), fail=True)
        (record,) = records(dest_records, 1)
        assert record["requestContext"]["condition"] == "EventAgeExceeded"
        assert record["requestContext"]["approximateInvokeCount"] == 1
        assert record["requestContext"]["requestId"] == rid
        assert record["responseContext"]["functionError"] == "Unhandled"
        assert calls.read_text().split() == [rid]
    finally:
        s.stop()


def test_bucket_notifications_use_the_functions_destinations(srv, tmp_path):
    lam = srv.client()
    dest_records = tmp_path / "records"
    # The S3 event carries no `calls` path: this source only returns.
    source = function(srv, "def handler(event, context):\n    return {'keys': len(event['Records'])}\n")
    dest = recorder(srv, dest_records)
    lam.put_function_event_invoke_config(FunctionName=source,
                                         DestinationConfig={"OnSuccess": {"Destination": arn(dest)}})
    bucket = unique_name("dstb").lower()
    lam.add_permission(FunctionName=source, StatementId="s3", Action="lambda:InvokeFunction",
                       Principal="s3.amazonaws.com", SourceArn=f"arn:aws:s3:::{bucket}", SourceAccount=ACCOUNT)
    key, secret = srv.credentials()
    s3 = boto3.client("s3", endpoint_url=srv.endpoint, region_name=REGION, aws_access_key_id=key,
                      aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "LambdaFunctionConfigurations": [{"LambdaFunctionArn": arn(source), "Events": ["s3:ObjectCreated:*"]}]})
    s3.put_object(Bucket=bucket, Key="report.csv", Body=b"a,b")
    (record,) = records(dest_records, 1)
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestPayload"]["Records"][0]["eventSource"] == "aws:s3"
    assert record["requestPayload"]["Records"][0]["s3"]["object"]["key"] == "report.csv"
    assert record["responsePayload"] == {"keys": 1}


def test_destination_types_this_node_does_not_offer_are_refused(srv):
    lam = srv.client()
    name = function(srv, SOURCE)
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:orders-failed"
    kept = lam.put_function_event_invoke_config(FunctionName=name,
                                                DestinationConfig={"OnFailure": {"Destination": queue}})

    def refused(member, destination):
        with pytest.raises(ClientError) as e:
            lam.put_function_event_invoke_config(FunctionName=name,
                                                 DestinationConfig={member: {"Destination": destination}})
        assert error_code(e) == "InvalidParameterValueException"
        return e.value.response["Error"]["Message"]

    assert "does not offer Amazon SNS" in refused("OnFailure", f"arn:aws:sns:{REGION}:{ACCOUNT}:topic")
    bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
    assert "does not offer Amazon EventBridge" in refused("OnSuccess", bus)
    assert "OnFailure destination only" in refused("OnSuccess", "arn:aws:s3:::records")
    assert "S3 bucket destinations are not supported" in refused("OnFailure", "arn:aws:s3:::records")
    assert "is invalid" in refused("OnFailure", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t")
    # Nothing changed.
    assert lam.get_function_event_invoke_config(FunctionName=name)["DestinationConfig"] == \
        kept["DestinationConfig"]

    # A function destination must exist, and be one this node reaches (AWS refuses a missing one).
    missing = arn(unique_name("missing"))
    assert refused("OnSuccess", missing) == f"The destination ARN {missing} is invalid."
    assert "is invalid" in refused("OnSuccess", f"arn:aws:lambda:eu-west-1:111111111111:function:{name}x")
    # Another partition is not this node's (delivery read only the name: the function itself, or a namesake).
    assert "is invalid" in refused("OnFailure", f"arn:aws-cn:lambda:{REGION}:{ACCOUNT}:function:{name}")
    # `{}` names a destination and sets none: accepted, and an update with it removes that one only.
    other = function(srv, SOURCE)
    lam.update_function_event_invoke_config(FunctionName=name,
                                            DestinationConfig={"OnSuccess": {"Destination": arn(other)}})
    lam.update_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {}})
    assert lam.get_function_event_invoke_config(FunctionName=name)["DestinationConfig"] == \
        {"OnSuccess": {}, "OnFailure": {"Destination": queue}}
    put = lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnFailure": {}})
    assert put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}

    # Dead-letter queues: SQS queues, not SNS topics, on create and update.
    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName=name,
                                          DeadLetterConfig={"TargetArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:t"})
    assert error_code(e) == "InvalidParameterValueException" and "does not offer Amazon SNS" in str(e.value)
    with pytest.raises(ClientError) as e:
        lam.create_function(FunctionName=unique_name("dst"), Runtime="python3.11", Handler="app.handler", Role=ROLE,
                            Code={"ZipFile": make_zip({"app.py": SOURCE})}, DeadLetterConfig={"TargetArn": missing})
    assert error_code(e) == "InvalidParameterValueException" and "Invalid dead letter queue ARN" in str(e.value)
    assert "DeadLetterConfig" not in lam.get_function_configuration(FunctionName=name)
    updated = lam.update_function_configuration(FunctionName=name, DeadLetterConfig={"TargetArn": queue})
    assert updated["DeadLetterConfig"] == {"TargetArn": queue}


def queue(server, fifo=False):
    sqs = sqs_client(server)
    fifo_attrs = {"FifoQueue": "true"} if fifo else {}
    url = sqs.create_queue(QueueName=unique_name("dstq") + (".fifo" if fifo else ""), Attributes=fifo_attrs)["QueueUrl"]
    return sqs, url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def receive_one(sqs, url):
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20, MessageAttributeNames=["All"]).get("Messages", [])
    assert len(got) == 1, got
    return got[0]


def test_a_failed_event_reaches_the_dead_letter_queue_with_aws_attributes(srv, tmp_path):
    sqs, url, queue_arn = queue(srv)
    lam = srv.client()
    name = function(srv, SOURCE, DeadLetterConfig={"TargetArn": queue_arn})
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    event = {"calls": str(tmp_path / "calls"), "fail": True}
    rid = send(lam, name, **event)
    m = receive_one(sqs, url)
    assert json.loads(m["Body"]) == event, "the original event, not a record"
    attrs = {k: (v["DataType"], v["StringValue"]) for k, v in m["MessageAttributes"].items()}
    assert attrs["RequestID"] == ("String", rid)
    assert attrs["ErrorCode"] == ("Number", "200")
    assert attrs["ErrorMessage"][0] == "String" and "failing on purpose" in attrs["ErrorMessage"][1]


# Notes its name in $CALLS, and fails.
FAILER = '''
import os

def handler(event, context):
    with open(os.environ["CALLS"], "a") as f:
        f.write(context.function_name + "\\n")
    raise RuntimeError("failing on purpose")
'''


def test_functions_failing_into_each_other_are_stopped_by_loop_detection(srv, tmp_path):
    """Two failing functions that name each other as OnFailure destinations:
    each record is one more invocation of the chain, so loop detection stops
    it, and the stopped event goes to the dead-letter queue. It went to the
    other function's destination instead, which was stopped in turn and sent
    its own record on: a thousand records in 15 s, without end."""
    sqs, url, dlq = queue(srv)
    lam = srv.client()
    calls = tmp_path / "calls"
    ping, pong = (function(srv, FAILER, Environment={"Variables": {"CALLS": str(calls)}},
                           DeadLetterConfig={"TargetArn": dlq}) for _ in range(2))
    for source, destination in ((ping, pong), (pong, ping)):
        lam.put_function_event_invoke_config(FunctionName=source, MaximumRetryAttempts=0,
                                             DestinationConfig={"OnFailure": {"Destination": arn(destination)}})
    send(lam, ping)
    stopped = receive_one(sqs, url)
    error = stopped["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert "recursive loop" in error, error
    # Each invocation of the chain ran once, alternating, until the limit (16).
    ran = calls.read_text().split()
    assert ran == [ping, pong] * 8 + [ping], ran


def test_what_a_queue_refuses_is_counted_in_aws_metrics(srv, tmp_path):
    """A FIFO queue takes no record and no dead-letter message (they carry no
    MessageGroupId): as on AWS, each counts in DestinationDeliveryFailures or
    DeadLetterErrors, not in silence."""
    _, _, fifo_arn = queue(srv, fifo=True)
    lam = srv.client()
    cw = aws_client(srv, "cloudwatch")
    to_destination = function(srv, SOURCE)
    lam.put_function_event_invoke_config(FunctionName=to_destination, MaximumRetryAttempts=0,
                                         DestinationConfig={"OnFailure": {"Destination": fifo_arn}})
    to_dlq = function(srv, SOURCE, DeadLetterConfig={"TargetArn": fifo_arn})
    lam.put_function_event_invoke_config(FunctionName=to_dlq, MaximumRetryAttempts=0)

    def count(name, metric):
        now = datetime.datetime.now(datetime.timezone.utc)
        points = cw.get_metric_statistics(
            Namespace="AWS/Lambda", MetricName=metric, Dimensions=[{"Name": "FunctionName", "Value": name}],
            StartTime=now - datetime.timedelta(minutes=10), EndTime=now + datetime.timedelta(minutes=1),
            Period=3600, Statistics=["Sum"])["Datapoints"]
        return sum(p["Sum"] for p in points)

    for name in (to_destination, to_dlq):
        send(lam, name, calls=str(tmp_path / f"calls-{name}"), fail=True)
    wait_for(lambda: count(to_destination, "DestinationDeliveryFailures") == 1, "a destination delivery failure")
    wait_for(lambda: count(to_dlq, "DeadLetterErrors") == 1, "a dead-letter error")
    assert count(to_destination, "DeadLetterErrors") == 0 and count(to_dlq, "DestinationDeliveryFailures") == 0


def test_on_failure_to_a_queue_gets_the_record(srv, tmp_path):
    sqs, url, queue_arn = queue(srv)
    lam = srv.client()
    name = function(srv, SOURCE)
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1,
                                         DestinationConfig={"OnFailure": {"Destination": queue_arn}})
    rid = send(lam, name, calls=str(tmp_path / "calls"), fail=True)
    record = json.loads(receive_one(sqs, url)["Body"])
    ctx = record["requestContext"]
    assert (ctx["requestId"], ctx["condition"], ctx["approximateInvokeCount"]) == (rid, "RetriesExhausted", 2)
    assert ctx["functionArn"] == arn(name, "$LATEST")
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorMessage"] == "failing on purpose"
    assert len((tmp_path / "calls").read_text().split()) == 2


def test_large_events_reach_the_queue_and_a_record_too_large_loses_only_its_payloads(srv, tmp_path):
    sqs, url, queue_arn = queue(srv)
    lam = srv.client()
    name = function(srv, SOURCE, DeadLetterConfig={"TargetArn": queue_arn})
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    # 300 KB: over SQS's old 256 KiB, within its 1 MiB (and async invoke's 1 MB).
    event = {"calls": str(tmp_path / "calls"), "fail": True, "pad": "p" * 300_000}
    send(lam, name, **event)
    assert json.loads(receive_one(sqs, url)["Body"]) == event

    # A queue that takes 2 KB: the record goes without its payloads, as AWS sends it.
    small_sqs, small_url, small_arn = queue(srv)
    small_sqs.set_queue_attributes(QueueUrl=small_url, Attributes={"MaximumMessageSize": "2048"})
    other = function(srv, SOURCE)
    lam.put_function_event_invoke_config(FunctionName=other, MaximumRetryAttempts=0,
                                         DestinationConfig={"OnFailure": {"Destination": small_arn}})
    rid = send(lam, other, calls=str(tmp_path / "calls-2"), fail=True, pad="p" * 4_000)
    record = json.loads(receive_one(small_sqs, small_url)["Body"])
    assert record["requestContext"]["requestId"] == rid
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert "requestPayload" not in record and "responsePayload" not in record


def test_the_readme_example(srv, tmp_path):
    (block,) = code_blocks(REPO / "README.md", "Asynchronous results: destinations and dead-letter queues")
    orders, audit = function(srv, SOURCE), recorder(srv, tmp_path / "records")
    script = block.replace("000000000000", ACCOUNT).replace("function:audit", f"function:{audit}")
    script = script.replace("--function-name orders", f"--function-name {orders}")
    script = script.replace('{"order": 7}', json.dumps({"calls": str(tmp_path / "calls"), "n": 7}))
    key, secret = srv.credentials()
    env = dict(os.environ, AWS_ENDPOINT_URL=srv.endpoint, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_DEFAULT_REGION=REGION, AWS_PAGER="", tmp=str(tmp_path))
    assert shutil.which("aws"), "the aws CLI must be installed by the test command"
    r = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (record,) = records(tmp_path / "records", 1)
    assert record["requestContext"]["condition"] == "Success" and record["responsePayload"] == {"doubled": 14}


def test_kill_9_loses_no_event(tmp_path):
    # Events go in, and the node is killed while one of them is running; the
    # restarted node finishes every one: each success and each failure
    # reaches its destination (at least once), none is lost.
    data, dest_records, calls = tmp_path / "data", tmp_path / "records", tmp_path / "calls"
    first = start(data, "--async-retry-delay", "0")
    try:
        lam = first.client()
        source, dest = function(first, SOURCE), recorder(first, dest_records)
        lam.put_function_event_invoke_config(
            FunctionName=source, MaximumRetryAttempts=0,
            DestinationConfig={"OnSuccess": {"Destination": arn(dest)}, "OnFailure": {"Destination": arn(dest)}})
        hold = tmp_path / "hold"
        ids = {send(lam, source, calls=str(calls), n=i, fail=i % 2 == 1) for i in range(6)}
        held = send(lam, source, calls=str(calls), hold=str(hold))
        ids.add(held)
        wait_for(hold.exists, "the held event to be running")
    finally:
        first.kill()
    second = start(data, "--async-retry-delay", "0")
    try:
        def finished():
            got = {r["requestContext"]["requestId"]: r["requestContext"]["condition"] for r in lines(dest_records)}
            return got if set(got) >= ids else None

        got = wait_for(finished, "every event to reach a destination", 60)
        assert got[held] == "Success"
        assert sorted(got[i] for i in ids) == ["RetriesExhausted"] * 3 + ["Success"] * 4
    finally:
        second.stop()
