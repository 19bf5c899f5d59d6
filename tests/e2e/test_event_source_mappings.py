"""Event source mappings from SQS queues to functions, end to end: the
Lambda API's mapping operations with boto3 and the aws CLI (states, AWS's
errors), and the pollers: AWS's SQS event, deletes on success, partial
batch responses, poison messages to the queue's dead-letter queue through
its redrive policy, filter criteria, batching windows, FIFO order,
concurrency, disabling, and restarts (graceful and kill -9)."""

import hashlib
import json

import pytest
from botocore.exceptions import ClientError

from conftest import (REGION, ROLE, Server, arn, aws_cli, make_zip, printed_events, sqs_client,
                      unique_name, wait_for)

RECORDER = '''
import json

def handler(event, context):
    print("EVENT " + json.dumps(event))
'''

# Reports the records whose body is "fail" as failed on their first delivery.
PARTIAL = '''
import json

def handler(event, context):
    print("EVENT " + json.dumps(event))
    return {"batchItemFailures": [
        {"itemIdentifier": r["messageId"]} for r in event["Records"]
        if r["body"] == "fail" and r["attributes"]["ApproximateReceiveCount"] == "1"]}
'''

FAILING = '''
import json

def handler(event, context):
    print("EVENT " + json.dumps(event))
    raise RuntimeError("poison")
'''


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("esm") / "data").start()
    yield s
    s.stop()




def function(server, code=RECORDER, timeout=1):
    name = unique_name("esmfn")
    server.client().create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                                    Code={"ZipFile": make_zip({"app.py": code})}, Timeout=timeout)
    return name


def queue(server, fifo=False, **attributes):
    name = unique_name("esmq") + (".fifo" if fifo else "")
    attrs = {"VisibilityTimeout": "1", **({"FifoQueue": "true"} if fifo else {}), **attributes}
    sqs = sqs_client(server)
    url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, queue_arn


def state(server, uuid):
    return server.client().get_event_source_mapping(UUID=uuid)["State"]


def map_queue(server, queue_arn, name, **kw):
    m = server.client().create_event_source_mapping(EventSourceArn=queue_arn, FunctionName=name, **kw)
    # AWS answers a mapping created disabled as Disabled at once.
    assert m["State"] == ("Creating" if kw.get("Enabled", True) else "Disabled")
    wait_for(lambda: state(server, m["UUID"]) == ("Enabled" if kw.get("Enabled", True) else "Disabled"),
             "the mapping to settle")
    return m["UUID"]



def events(server, name, n, timeout=30):
    return wait_for(lambda: len(printed_events(server, name)) >= n and printed_events(server, name),
                    f"{n} invocation(s) of {name}", timeout)


def queue_empty(server, url):
    attrs = sqs_client(server).get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return all(v == "0" for v in attrs["Attributes"].values())


def test_crud_with_the_aws_cli_and_states_as_aws_reports_them(srv):
    name = function(srv)
    _, queue_arn = queue(srv)
    code, m, err = aws_cli(srv, "create-event-source-mapping", "--event-source-arn", queue_arn,
                           "--function-name", name, "--batch-size", "5")
    assert code == 0, err
    assert m["State"] == "Creating" and m["StateTransitionReason"] == "USER_INITIATED"
    assert (m["EventSourceArn"], m["FunctionArn"], m["BatchSize"], m["MaximumBatchingWindowInSeconds"]) == \
        (queue_arn, arn(name), 5, 0)
    assert m["FunctionResponseTypes"] == [] and "FilterCriteria" not in m and "ScalingConfig" not in m
    assert m["EventSourceMappingArn"] == f"arn:aws:lambda:{REGION}:123456789012:event-source-mapping:{m['UUID']}"
    assert isinstance(m["LastModified"], float)
    uuid = m["UUID"]
    wait_for(lambda: state(srv, uuid) == "Enabled", "Enabled")

    lam = srv.client()
    listed = lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
    assert [x["UUID"] for x in listed] == [uuid]
    assert [x["UUID"] for x in lam.list_event_source_mappings(EventSourceArn=queue_arn)["EventSourceMappings"]] \
        == [uuid]
    assert lam.list_event_source_mappings(FunctionName=function(srv))["EventSourceMappings"] == []

    updated = lam.update_event_source_mapping(
        UUID=uuid, BatchSize=20, MaximumBatchingWindowInSeconds=1, FunctionResponseTypes=["ReportBatchItemFailures"],
        ScalingConfig={"MaximumConcurrency": 2}, FilterCriteria={"Filters": [{"Pattern": '{"body": {"a": [1]}}'}]})
    assert updated["State"] == "Updating" and updated["BatchSize"] == 20
    assert updated["ScalingConfig"] == {"MaximumConcurrency": 2}
    assert updated["FilterCriteria"] == {"Filters": [{"Pattern": '{"body": {"a": [1]}}'}]}
    wait_for(lambda: state(srv, uuid) == "Enabled", "Enabled after the update")

    assert lam.update_event_source_mapping(UUID=uuid, Enabled=False)["State"] == "Disabling"
    wait_for(lambda: state(srv, uuid) == "Disabled", "Disabled")
    assert lam.update_event_source_mapping(UUID=uuid, Enabled=True)["State"] == "Enabling"
    wait_for(lambda: state(srv, uuid) == "Enabled", "Enabled again")

    code, gone, err = aws_cli(srv, "delete-event-source-mapping", "--uuid", uuid)
    assert code == 0, err
    assert gone["State"] == "Deleting" and gone["UUID"] == uuid

    def deleted():
        try:
            lam.get_event_source_mapping(UUID=uuid)
            return False
        except ClientError as e:
            return e.response["Error"]["Code"] == "ResourceNotFoundException"
    wait_for(deleted, "the mapping to be deleted")


def test_bad_settings_get_aws_errors_and_change_nothing(srv):
    lam = srv.client()
    name = function(srv)
    _, queue_arn = queue(srv)
    _, fifo_arn = queue(srv, fifo=True)
    _, short_arn = queue(srv, VisibilityTimeout="0")

    def refused(**kw):
        with pytest.raises(ClientError) as e:
            lam.create_event_source_mapping(**{"EventSourceArn": queue_arn, "FunctionName": name, **kw})
        return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]

    missing_queue = queue_arn + "-missing"
    assert refused(EventSourceArn=missing_queue) == ("InvalidParameterValueException", "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. SQS Error Message: The specified queue does not exist or you do not have access to it.")
    nofn = unique_name("nofn")
    assert refused(FunctionName=nofn) == ("ResourceNotFoundException", f"Function not found: {arn(nofn)}")
    assert refused(BatchSize=11) == ("InvalidParameterValueException", "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10")
    assert refused(BatchSize=10001, MaximumBatchingWindowInSeconds=1)[0] == "ValidationException"
    assert refused(EventSourceArn=fifo_arn, MaximumBatchingWindowInSeconds=1) == \
        ("InvalidParameterValueException", "Batching window is not supported for FIFO queues")
    assert refused(EventSourceArn=fifo_arn, BatchSize=11)[0] == "InvalidParameterValueException"
    assert refused(EventSourceArn=short_arn) == \
        ("InvalidParameterValueException", "Queue visibility timeout: 0 seconds is less than Function timeout: 1 seconds")
    assert refused(StartingPosition="LATEST") == \
        ("InvalidParameterValueException", "StartingPosition is not valid for SQS event sources.")
    # Settings for streams and Kafka are refused by name, not dropped.
    for setting in [{"MaximumRetryAttempts": 2}, {"BisectBatchOnFunctionError": True}, {"ParallelizationFactor": 2},
                    {"TumblingWindowInSeconds": 10}, {"MaximumRecordAgeInSeconds": 100},
                    {"DestinationConfig": {"OnFailure": {"Destination": queue_arn}}}]:
        [key] = setting
        assert refused(**setting) == \
            ("InvalidParameterValueException", f"Unsupported '{key}' parameter for given event source mapping type")
    assert refused(FilterCriteria={"Filters": [{"Pattern": '{"body": "not a list"}'}]}) == \
        ("InvalidParameterValueException", "Invalid filter pattern definition.")
    assert refused(FilterCriteria={"Filters": [{"Pattern": '{"a": [1]}'}] * 6})[0] == \
        "InvalidParameterValueException"
    assert lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"] == []

    uuid = map_queue(srv, queue_arn, name)
    code, msg = refused()
    assert code == "ResourceConflictException"
    assert msg == (f'An event source mapping with SQS arn (" {queue_arn} ") and function (" {name} ") already '
                   f"exists. Please update or delete the existing mapping with UUID {uuid}")
    other = function(srv)
    other_uuid = map_queue(srv, queue_arn, other)
    with pytest.raises(ClientError) as e:
        lam.update_event_source_mapping(UUID=other_uuid, FunctionName=name)
    assert e.value.response["Error"]["Code"] == "ResourceConflictException"
    assert lam.get_event_source_mapping(UUID=other_uuid)["FunctionArn"] == arn(other)
    lam.delete_event_source_mapping(UUID=other_uuid)
    with pytest.raises(ClientError) as e:
        lam.update_event_source_mapping(UUID=uuid, BatchSize=50)
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert lam.get_event_source_mapping(UUID=uuid)["BatchSize"] == 10
    with pytest.raises(ClientError) as e:
        lam.get_event_source_mapping(UUID="00000000-0000-0000-0000-000000000000")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    lam.delete_event_source_mapping(UUID=uuid)


def test_a_sent_message_invokes_the_function_with_aws_sqs_event(srv):
    name = function(srv)
    url, queue_arn = queue(srv)
    map_queue(srv, queue_arn, name)
    sqs = sqs_client(srv)
    sent = sqs.send_message(QueueUrl=url, MessageBody='{"hello": "world"}',
                            MessageAttributes={"who": {"DataType": "String", "StringValue": "me"}})
    [event] = events(srv, name, 1)
    [r] = event["Records"]
    assert set(r) == {"messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
                      "md5OfMessageAttributes", "eventSource", "eventSourceARN", "awsRegion"}
    assert r["messageId"] == sent["MessageId"] and r["body"] == '{"hello": "world"}'
    assert r["md5OfBody"] == hashlib.md5(b'{"hello": "world"}').hexdigest() == sent["MD5OfMessageBody"]
    assert r["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert r["messageAttributes"] == {"who": {"stringValue": "me", "stringListValues": [], "binaryListValues": [],
                                              "dataType": "String"}}
    assert (r["eventSource"], r["eventSourceARN"], r["awsRegion"]) == ("aws:sqs", queue_arn, REGION)
    assert r["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(r["attributes"])
    # Success deletes the message.
    wait_for(lambda: queue_empty(srv, url), "the handled message to be deleted")


def test_a_partial_batch_failure_puts_back_only_the_failed_items(srv):
    name = function(srv, PARTIAL)
    url, queue_arn = queue(srv)
    sqs = sqs_client(srv)
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in
                                                  enumerate(["one", "fail", "three"])])
    map_queue(srv, queue_arn, name, FunctionResponseTypes=["ReportBatchItemFailures"])
    first, second = events(srv, name, 2)[:2]
    assert sorted(r["body"] for r in first["Records"]) == ["fail", "one", "three"]
    [again] = second["Records"]
    assert (again["body"], again["attributes"]["ApproximateReceiveCount"]) == ("fail", "2")
    wait_for(lambda: queue_empty(srv, url), "the queue to drain")
    assert len(printed_events(srv, name)) == 2


def test_a_poison_message_reaches_the_dead_letter_queue(srv):
    name = function(srv, FAILING)
    dlq_url, dlq_arn = queue(srv)
    url, queue_arn = queue(srv, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
    map_queue(srv, queue_arn, name, BatchSize=1)
    sqs = sqs_client(srv)
    sent = sqs.send_message(QueueUrl=url, MessageBody="poison")

    def dead():
        return sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1).get("Messages")
    [msg] = wait_for(dead, "the message in the dead-letter queue", timeout=30)
    assert (msg["MessageId"], msg["Body"]) == (sent["MessageId"], "poison")
    counts = [e["Records"][0]["attributes"]["ApproximateReceiveCount"] for e in events(srv, name, 2)]
    assert counts == ["1", "2"]


def test_filter_criteria_drop_messages_that_do_not_match(srv):
    name = function(srv)
    url, queue_arn = queue(srv)
    pattern = {"body": {"kind": ["keep"], "size": [{"numeric": [">", 10]}]}}
    map_queue(srv, queue_arn, name, FilterCriteria={"Filters": [{"Pattern": json.dumps(pattern)}]})
    sqs = sqs_client(srv)
    for body in [{"kind": "drop", "size": 50}, "plain text", {"kind": "keep", "size": 5}, {"kind": "keep", "size": 11}]:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body) if isinstance(body, dict) else body)
    wait_for(lambda: queue_empty(srv, url), "every message to be handled or dropped")
    [event] = events(srv, name, 1)
    assert [json.loads(r["body"]) for r in event["Records"]] == [{"kind": "keep", "size": 11}]
    assert len(printed_events(srv, name)) == 1


def test_a_body_that_is_not_the_patterns_kind_is_dropped(srv):
    """AWS drops a plain-text body under a JSON pattern and a JSON body under a
    pattern for text, whatever the pattern asks (here: that a key is absent,
    or any value at all but one)."""
    name = function(srv)
    url, queue_arn = queue(srv)
    patterns = [{"body": {"id": [{"exists": False}]}}, {"body": [{"anything-but": "skip"}]}]
    map_queue(srv, queue_arn, name, FilterCriteria={"Filters": [{"Pattern": json.dumps(p)} for p in patterns]})
    sqs = sqs_client(srv)
    for body in ["plain text", '{"id": 1}', '{"other": 2}', "skip"]:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    wait_for(lambda: queue_empty(srv, url), "every message to be handled or dropped")

    def bodies():
        return sorted(r["body"] for e in printed_events(srv, name) for r in e["Records"])
    wait_for(lambda: len(bodies()) >= 2, "the two messages that pass")
    assert bodies() == ["plain text", '{"other": 2}']


@pytest.mark.parametrize("created_disabled", [False, True])
def test_disabling_stops_delivery_and_enabling_resumes_it(srv, created_disabled):
    lam = srv.client()
    name = function(srv)
    url, queue_arn = queue(srv)
    uuid = map_queue(srv, queue_arn, name, Enabled=not created_disabled)
    if not created_disabled:
        lam.update_event_source_mapping(UUID=uuid, Enabled=False)
    wait_for(lambda: state(srv, uuid) == "Disabled", "Disabled")
    sqs = sqs_client(srv)
    sqs.send_message(QueueUrl=url, MessageBody="while disabled")
    # Nobody else takes it: the test receives it itself, and puts it back.
    [msg] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"]
    assert msg["Body"] == "while disabled"
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"], VisibilityTimeout=0)
    assert printed_events(srv, name) == []
    lam.update_event_source_mapping(UUID=uuid, Enabled=True)
    [event] = events(srv, name, 1)
    assert event["Records"][0]["body"] == "while disabled"


def test_a_fifo_queue_is_delivered_in_order_per_group(srv):
    name = function(srv)
    url, queue_arn = queue(srv, fifo=True, ContentBasedDeduplication="true")
    sqs = sqs_client(srv)
    for i in range(6):
        sqs.send_message(QueueUrl=url, MessageBody=f"{'ab'[i % 2]}{i}", MessageGroupId="ab"[i % 2])
    map_queue(srv, queue_arn, name, BatchSize=2, ScalingConfig={"MaximumConcurrency": 2})
    def delivered():
        return [r["body"] for e in printed_events(srv, name) for r in e["Records"]]
    bodies = wait_for(lambda: len(delivered()) >= 6 and delivered(), "six records")
    wait_for(lambda: queue_empty(srv, url), "the queue to drain")
    assert sorted(bodies) == ["a0", "a2", "a4", "b1", "b3", "b5"]
    for group in "ab":
        mine = [b for b in bodies if b[0] == group]
        assert mine == sorted(mine, key=lambda b: int(b[1:])), bodies
    records = [r for e in printed_events(srv, name) for r in e["Records"]]
    assert all(r["attributes"]["MessageGroupId"] == r["body"][0] for r in records)
    assert all("SequenceNumber" in r["attributes"] and "MessageDeduplicationId" in r["attributes"]
               for r in records)


def test_a_fifo_backlog_of_one_group_flows_as_each_batch_is_deleted(srv):
    """A group's next message is delivered once its batch is deleted, not a
    visibility timeout (here two minutes) later."""
    name = function(srv)
    url, queue_arn = queue(srv, fifo=True, ContentBasedDeduplication="true", VisibilityTimeout="120")
    sqs = sqs_client(srv)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", MessageGroupId="g")
    map_queue(srv, queue_arn, name, BatchSize=1)
    delivered = events(srv, name, 3, timeout=60)
    assert [e["Records"][0]["body"] for e in delivered] == ["m0", "m1", "m2"]


def test_enabled_mappings_poll_again_after_a_restart(tmp_path):
    s = Server(tmp_path / "data").start()
    try:
        name = function(s)
        url, queue_arn = queue(s)
        map_queue(s, queue_arn, name)
        s.stop()
        s.start()
        sqs_client(s).send_message(QueueUrl=url, MessageBody="after the restart")
        [event] = events(s, name, 1)
        assert event["Records"][0]["body"] == "after the restart"
    finally:
        s.stop()


SLOW = '''
import json
import time

def handler(event, context):
    start = time.time()
    time.sleep(0.3)
    print("EVENT " + json.dumps({"start": start, "end": time.time(), "n": len(event["Records"])}))
'''


def test_a_backlog_runs_batches_concurrently_up_to_maximum_concurrency(srv):
    name = function(srv, SLOW, timeout=2)
    url, queue_arn = queue(srv, VisibilityTimeout="5")
    sqs_client(srv).send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(i)}
                                                              for i in range(8)])
    map_queue(srv, queue_arn, name, BatchSize=1, ScalingConfig={"MaximumConcurrency": 2})
    runs = events(srv, name, 8)
    assert sum(r["n"] for r in runs) == 8

    def overlap(t):
        return sum(1 for r in runs if r["start"] <= t < r["end"])
    assert max(overlap(r["start"]) for r in runs) == 2


def test_a_throttled_batch_waits_for_the_function_not_for_the_dead_letter_queue(srv):
    """A function at its reserved concurrency throttles the batches beyond
    it: they are invoked again while still invisible, and none reaches the
    dead-letter queue unrun (each went there at its first receive)."""
    name = function(srv, SLOW, timeout=2)
    srv.client().put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    dlq_url, dlq_arn = queue(srv)
    url, queue_arn = queue(srv, VisibilityTimeout="10",
                           RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}))
    sqs_client(srv).send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(i)}
                                                              for i in range(4)])
    map_queue(srv, queue_arn, name, BatchSize=1)
    runs = events(srv, name, 4)
    assert sum(r["n"] for r in runs) == 4
    assert wait_for(lambda: queue_empty(srv, url), "the batches' deletion")
    assert queue_empty(srv, dlq_url)


def test_a_batching_window_gathers_more_than_one_receive(srv):
    name = function(srv)
    url, queue_arn = queue(srv, VisibilityTimeout="5")
    sqs = sqs_client(srv)
    for first in (0, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(first + i)}
                                                      for i in range(10 if first == 0 else 5)])
    map_queue(srv, queue_arn, name, BatchSize=20, MaximumBatchingWindowInSeconds=1)
    [event] = events(srv, name, 1)
    assert sorted(int(r["body"]) for r in event["Records"]) == list(range(15))
    wait_for(lambda: queue_empty(srv, url), "the batch to be deleted")
    assert len(printed_events(srv, name)) == 1


# Hangs on a message's first delivery, so the node can be killed meanwhile.
HANG_FIRST = '''
import json
import time

def handler(event, context):
    if event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "1":
        time.sleep(60)
    print("EVENT " + json.dumps(event))
'''


def test_a_batch_in_flight_when_the_node_is_killed_is_delivered_after_the_restart(tmp_path):
    """Once its visibility timeout ends, which the restart keeps, as AWS's
    poller's batches come back when it fails."""
    s = Server(tmp_path / "data").start()
    try:
        name = function(s, HANG_FIRST, timeout=3)
        url, queue_arn = queue(s, VisibilityTimeout="3")
        map_queue(s, queue_arn, name)
        sqs_client(s).send_message(QueueUrl=url, MessageBody="in flight")

        def taken():
            attrs = sqs_client(s).get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            return attrs["ApproximateNumberOfMessagesNotVisible"] == "1"
        wait_for(taken, "the poller to take the message")
        s.kill()
        s.start()
        [event] = events(s, name, 1)
        assert event["Records"][0]["body"] == "in flight"
        assert event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
    finally:
        s.stop()
