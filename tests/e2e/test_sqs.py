"""The SQS API end to end: boto3's `sqs` client (JSON protocol), signed
query-protocol requests (as older SDKs send them, also to the queue URL
itself) and the aws CLI, against a real server: queues and their
attributes, send/receive/delete with visibility, long polling, batches,
dead-letter queues and move tasks, FIFO order and deduplication, tags, and
acknowledged sends surviving kill -9."""

import hashlib
import json
import signal
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from conftest import (ACCOUNT, REGION, impatient_client, signed_request, sqs_client, store_write_locked, unique_name,
                      wait_for)

NS = {"q": "http://queue.amazonaws.com/doc/2012-11-05/"}




@pytest.fixture(scope="module")
def sqs(server):
    return sqs_client(server)


def error_of(excinfo):
    err = excinfo.value.response["Error"]
    return err["Code"], err["Message"]


def query(server, params, path="/"):
    """A query-protocol request (form body) signed for sqs; returns (status, parsed XML)."""
    body = urllib.parse.urlencode({**params, "Version": "2012-11-05"}).encode()
    status, _, raw = signed_request(server, "POST", path, body, service="sqs",
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    return status, ET.fromstring(raw)


def new_queue(sqs, prefix="q", **attributes):
    name = unique_name(prefix) + (".fifo" if attributes.get("FifoQueue") == "true" else "")
    return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def arn_of(sqs, url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def test_queue_lifecycle_and_urls(server, sqs):
    name = unique_name("life")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"]
    assert url == f"{server.endpoint}/{ACCOUNT}/{name}"
    # Same attributes: the same queue; different ones: QueueNameExists.
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"] == url
    with pytest.raises(ClientError) as e:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "46"})
    assert error_of(e)[0] == "QueueAlreadyExists"
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    assert url in sqs.list_queues(QueueNamePrefix=name)["QueueUrls"]
    # Any host form of the URL addresses the queue.
    other_host = url.replace("127.0.0.1", "localhost")
    assert sqs.get_queue_attributes(QueueUrl=other_host, AttributeNames=["All"])["Attributes"]["VisibilityTimeout"] == "45"
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(ClientError) as e:
        sqs.get_queue_url(QueueName=name)
    assert error_of(e) == ("AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist.")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # As on AWS, the name is not to be had again for a minute.
    with pytest.raises(ClientError) as e:
        sqs.create_queue(QueueName=name)
    assert error_of(e) == ("AWS.SimpleQueueService.QueueDeletedRecently", "You must wait 60 seconds after deleting a queue before you can create another queue with the same name.")


def test_list_queues_pages(sqs):
    prefix = unique_name("page")
    urls = sorted(sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(5))
    first = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2)
    assert first["QueueUrls"] == urls[:2] and "NextToken" in first
    seen = list(first["QueueUrls"])
    token = first["NextToken"]
    while token:
        page = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=token)
        seen += page["QueueUrls"]
        token = page.get("NextToken")
    assert seen == urls


@pytest.mark.parametrize("name,attributes,code", [
    ("bad name", {}, "InvalidParameterValue"),
    ("x" * 81, {}, "InvalidParameterValue"),
    ("notfifo", {"FifoQueue": "true"}, "InvalidParameterValue"),
    ("named.fifo", {}, "InvalidParameterValue"),
    ("ok", {"VisibilityTimeout": "43201"}, "InvalidAttributeValue"),
    ("ok", {"MessageRetentionPeriod": "59"}, "InvalidAttributeValue"),
    ("ok", {"DelaySeconds": "901"}, "InvalidAttributeValue"),
    ("ok", {"MaximumMessageSize": "1023"}, "InvalidAttributeValue"),
    ("ok", {"ReceiveMessageWaitTimeSeconds": "21"}, "InvalidAttributeValue"),
    ("ok", {"Bogus": "1"}, "InvalidAttributeName"),
    ("ok", {"ContentBasedDeduplication": "true"}, "InvalidAttributeName"),
    ("ok", {"RedrivePolicy": '{"maxReceiveCount": 3}'}, "InvalidParameterValue"),
])
def test_bad_queues_are_refused(sqs, name, attributes, code):
    before = sqs.list_queues().get("QueueUrls", [])
    with pytest.raises(ClientError) as e:
        sqs.create_queue(QueueName=name, Attributes=attributes)
    assert error_of(e)[0] == code
    assert sqs.list_queues().get("QueueUrls", []) == before


def test_attributes_round_trip(sqs):
    url = new_queue(sqs)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "2", "MaximumMessageSize": "2048",
                                                       "MessageRetentionPeriod": "600"})
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attrs["DelaySeconds"], attrs["MaximumMessageSize"], attrs["MessageRetentionPeriod"]) == ("2", "2048", "600")
    assert attrs["QueueArn"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:{url.rsplit('/', 1)[1]}"
    assert int(attrs["CreatedTimestamp"]) <= int(attrs["LastModifiedTimestamp"]) <= time.time() + 1
    only = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds"])["Attributes"]
    assert only == {"DelaySeconds": "2"}
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "-1"})
    assert error_of(e) == ("InvalidAttributeValue", "Invalid value for the parameter VisibilityTimeout.")
    with pytest.raises(ClientError) as e:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Nope"])
    assert error_of(e)[0] == "InvalidAttributeName"
    # A message bigger than MaximumMessageSize is refused.
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x" * 2049)
    assert error_of(e)[0] == "InvalidParameterValue"
    # By default a queue takes 1 MiB, as SQS since 2025: a message of
    # 500,000 two-byte characters (six bytes each as boto3 escapes them) comes whole.
    big_url = new_queue(sqs)
    attrs = sqs.get_queue_attributes(QueueUrl=big_url, AttributeNames=["MaximumMessageSize"])["Attributes"]
    assert attrs == {"MaximumMessageSize": "1048576"}
    body = "\u00e9" * 500_000
    sqs.send_message(QueueUrl=big_url, MessageBody=body)
    assert sqs.receive_message(QueueUrl=big_url)["Messages"][0]["Body"] == body
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=big_url, MessageBody="x" * 1_048_577)
    assert error_of(e)[0] == "InvalidParameterValue"


def test_send_receive_delete_and_visibility(sqs):
    url = new_queue(sqs)
    attrs = {"color": {"DataType": "String", "StringValue": "blue"},
             "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
             "n": {"DataType": "Number", "StringValue": "7"}}
    # boto3 checks MD5OfMessageBody and MD5OfMessageAttributes itself.
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello", MessageAttributes=attrs)
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"hello").hexdigest()
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1,
                              MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])["Messages"]
    assert len(got) == 1
    m = got[0]
    assert (m["MessageId"], m["Body"]) == (sent["MessageId"], "hello")
    assert m["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01"
    assert m["Attributes"]["ApproximateReceiveCount"] == "1"
    assert m["Attributes"]["SenderId"] and int(m["Attributes"]["SentTimestamp"]) > 0
    # In flight: invisible until the 1 s timeout passes, then back with count 2.
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    wait_for(lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
             ["Attributes"]["ApproximateNumberOfMessages"] == "1", "the message to be visible again", timeout=10)
    # Its handle, lapsed but not yet replaced, changes nothing and is not an error, as on AWS
    # (sqs-consumer makes this call for a handler that ran past the timeout).
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=600)
    again = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=5,
                                MessageAttributeNames=["col*", "n"])["Messages"]
    assert again[0]["Attributes"] == {"ApproximateReceiveCount": "2"}
    assert set(again[0]["MessageAttributes"]) == {"n"}
    # Received again, the old receipt handle can no longer change visibility (SQS's
    # InvalidParameterValue, not the model's MessageNotInflight); the new one can.
    with pytest.raises(ClientError) as e:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    assert error_of(e) == ("InvalidParameterValue", f"Value {m['ReceiptHandle']} for parameter ReceiptHandle is "
                           "invalid. Reason: Message does not exist or is not available for visibility timeout change.")
    failed = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "old", "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}])["Failed"]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in failed] == [("old", "InvalidParameterValue", True)]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again[0]["ReceiptHandle"], VisibilityTimeout=0)
    third = sqs.receive_message(QueueUrl=url)["Messages"][0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"])
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == counts["ApproximateNumberOfMessagesNotVisible"] == "0"
    with pytest.raises(ClientError) as e:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")
    assert error_of(e)[0] == "ReceiptHandleIsInvalid"


def test_bad_messages_are_refused(sqs):
    url = new_queue(sqs)
    for body, code in [("bad \x01 char", "InvalidMessageContents"), ("x" * (1024 * 1024 + 1), "InvalidParameterValue")]:
        with pytest.raises(ClientError) as e:
            sqs.send_message(QueueUrl=url, MessageBody=body)
        assert error_of(e)[0] == code
    with pytest.raises(ClientError) as e:
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert error_of(e)[0] == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", DelaySeconds=901)
    assert error_of(e)[0] == "InvalidParameterValue"
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"] == {
        "ApproximateNumberOfMessages": "0"}


def test_delayed_messages(sqs):
    url = new_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
    start = time.monotonic()
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
    assert got[0]["Body"] == "later"
    assert 0.5 < time.monotonic() - start < 4


def test_long_poll_wakes_on_send(server, sqs):
    url = new_queue(sqs)
    sender = sqs_client(server)
    result = {}

    def poll():
        result["messages"] = sqs_client(server).receive_message(QueueUrl=url, WaitTimeSeconds=20).get("Messages", [])
        result["returned"] = time.monotonic()

    t = threading.Thread(target=poll)
    t.start()
    # Give the poll a head start (not synchronisation: if it started late it
    # simply finds the message), then send: it must return at once, not
    # after its 20 s wait.
    time.sleep(0.3)
    assert t.is_alive()
    sent_at = time.monotonic()
    sender.send_message(QueueUrl=url, MessageBody="wake up")
    t.join(timeout=10)
    assert not t.is_alive()
    assert [m["Body"] for m in result["messages"]] == ["wake up"]
    assert result["returned"] - sent_at < 2, result
    # With nothing sent, a short wait returns empty after about that long.
    start = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert 0.9 < time.monotonic() - start < 3


def test_batches(sqs):
    url = new_queue(sqs)
    out = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "one"},
        {"Id": "b", "MessageBody": "two", "DelaySeconds": 0,
         "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
        {"Id": "c", "MessageBody": "bad \x02"},
    ])
    assert sorted(s["Id"] for s in out["Successful"]) == ["a", "b"]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in out["Failed"]] == [("c", "InvalidMessageContents", True)]
    for entries, code in [
        ([{"Id": "x", "MessageBody": "1"}, {"Id": "x", "MessageBody": "2"}], "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        ([{"Id": str(i), "MessageBody": "m"} for i in range(11)], "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
        ([{"Id": "bad id!", "MessageBody": "m"}], "AWS.SimpleQueueService.InvalidBatchEntryId"),
        ([{"Id": str(i), "MessageBody": "x" * 400_000} for i in range(3)], "AWS.SimpleQueueService.BatchRequestTooLong"),
    ]:
        with pytest.raises(ClientError) as e:
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert error_of(e)[0] == code
    with pytest.raises(ClientError) as e:
        sqs.send_message_batch(QueueUrl=url, Entries=[])
    assert error_of(e)[0] in ("AWS.SimpleQueueService.EmptyBatchRequest", "ParamValidation")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)["Messages"]
    assert sorted(m["Body"] for m in got) == ["one", "two"]
    vis = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "m0", "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 0},
        {"Id": "bad", "ReceiptHandle": "garbage", "VisibilityTimeout": 0},
    ])
    assert [s["Id"] for s in vis["Successful"]] == ["m0"] and [f["Id"] for f in vis["Failed"]] == ["bad"]
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "d1", "ReceiptHandle": got[1]["ReceiptHandle"]},
        {"Id": "d2", "ReceiptHandle": "garbage"},
    ])
    assert [s["Id"] for s in deleted["Successful"]] == ["d1"]
    assert [(f["Id"], f["Code"]) for f in deleted["Failed"]] == [("d2", "ReceiptHandleIsInvalid")]
    # The one made visible again is all that is left.
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in left] == [got[0]["Body"]]


def test_dead_letter_queue_and_move_back(sqs):
    dlq = new_queue(sqs, "dlq")
    dlq_arn = arn_of(sqs, dlq)
    src = new_queue(sqs, "src", RedrivePolicy=f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}')
    src_arn = arn_of(sqs, src)
    policy = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    assert '"maxReceiveCount":2' in policy.replace(" ", "")
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [src]
    sqs.send_message(QueueUrl=src, MessageBody="poison")
    for _ in range(2):
        assert sqs.receive_message(QueueUrl=src, VisibilityTimeout=0)["Messages"][0]["Body"] == "poison"
    # The third receive would exceed maxReceiveCount: the message moves instead.
    assert "Messages" not in sqs.receive_message(QueueUrl=src, VisibilityTimeout=0)
    dead = sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=0, MessageSystemAttributeNames=["All"])["Messages"]
    assert dead[0]["Body"] == "poison"
    assert dead[0]["Attributes"]["DeadLetterQueueSourceArn"] == src_arn
    # A move task redrives it back to its source.
    with pytest.raises(ClientError) as e:
        sqs.start_message_move_task(SourceArn=src_arn)
    assert error_of(e)[0] == "InvalidParameterValue"
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    assert handle
    done = wait_for(lambda: [t for t in sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
                             if t["Status"] == "COMPLETED"], "the move task to complete")
    assert done[0]["ApproximateNumberOfMessagesMoved"] == 1
    back = sqs.receive_message(QueueUrl=src, MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert back[0]["Body"] == "poison" and back[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    assert "Messages" not in sqs.receive_message(QueueUrl=dlq)
    with pytest.raises(ClientError) as e:
        sqs.cancel_message_move_task(TaskHandle=handle)
    assert error_of(e)[0] in ("AWS.SimpleQueueService.UnsupportedOperation", "UnsupportedOperation")


def test_a_dead_letter_queues_redrive_allow_policy_says_who_may_name_it(sqs):
    closed = new_queue(sqs, "dlqdeny", RedriveAllowPolicy='{"redrivePermission":"denyAll"}')
    closed_arn = arn_of(sqs, closed)
    with pytest.raises(ClientError) as e:
        new_queue(sqs, "src", RedrivePolicy=f'{{"deadLetterTargetArn":"{closed_arn}","maxReceiveCount":"1"}}')
    assert error_of(e)[0] == "InvalidParameterValue" and "RedriveAllowPolicy" in error_of(e)[1]
    src = new_queue(sqs, "src")
    src_arn = arn_of(sqs, src)
    listed = new_queue(sqs, "dlqby", RedriveAllowPolicy=json.dumps(
        {"redrivePermission": "byQueue", "sourceQueueArns": [src_arn]}))
    listed_arn = arn_of(sqs, listed)
    sqs.set_queue_attributes(QueueUrl=src, Attributes={
        "RedrivePolicy": f'{{"deadLetterTargetArn":"{listed_arn}","maxReceiveCount":"1"}}'})
    with pytest.raises(ClientError) as e:
        new_queue(sqs, "other", RedrivePolicy=f'{{"deadLetterTargetArn":"{listed_arn}","maxReceiveCount":"1"}}')
    assert error_of(e)[0] == "InvalidParameterValue"


def test_move_tasks_move_what_their_queue_held_and_end(sqs):
    """A task moves at most what its queue held when it started: one into
    its own queue is refused, and two moving between two queues end."""
    a, b = new_queue(sqs, "dlqa"), new_queue(sqs, "dlqb")
    a_arn, b_arn = arn_of(sqs, a), arn_of(sqs, b)
    for dlq in (a_arn, b_arn):
        new_queue(sqs, "src", RedrivePolicy=f'{{"deadLetterTargetArn":"{dlq}","maxReceiveCount":"1"}}')
    for q in (a, b):
        sqs.send_message_batch(QueueUrl=q, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)])
    with pytest.raises(ClientError) as e:
        sqs.start_message_move_task(SourceArn=a_arn, DestinationArn=a_arn)
    assert error_of(e)[0] == "InvalidParameterValue"
    sqs.start_message_move_task(SourceArn=a_arn, DestinationArn=b_arn)
    sqs.start_message_move_task(SourceArn=b_arn, DestinationArn=a_arn)
    for arn in (a_arn, b_arn):
        done = wait_for(lambda: [t for t in sqs.list_message_move_tasks(SourceArn=arn)["Results"]
                                 if t["Status"] == "COMPLETED"], "the move task to end")
        assert done[0]["ApproximateNumberOfMessagesMoved"] <= 20
    counts = [int(sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["ApproximateNumberOfMessages"])
                  ["Attributes"]["ApproximateNumberOfMessages"]) for q in (a, b)]
    assert sum(counts) == 20, counts


def test_fifo_order_and_deduplication(sqs):
    url = new_queue(sqs, "fifo", FifoQueue="true")
    for i in range(3):
        for g in ("a", "b"):
            sqs.send_message(QueueUrl=url, MessageBody=f"{g}{i}", MessageGroupId=g, MessageDeduplicationId=f"{g}{i}")
    # Deduplicated by id: the same id is accepted but not queued twice.
    dup = sqs.send_message(QueueUrl=url, MessageBody="a0", MessageGroupId="a", MessageDeduplicationId="a0")
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, MessageSystemAttributeNames=["All"])["Messages"]
    assert first[0]["Body"] == "a0" and dup["MessageId"] == first[0]["MessageId"]
    assert first[0]["Attributes"]["MessageGroupId"] == "a"
    # Group a is held while a0 is in flight; group b flows in order.
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in rest] == ["b0", "b1", "b2"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    nxt = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in nxt] == ["a1", "a2"]
    # Missing group id and missing deduplication are refused.
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="x")
    assert error_of(e)[0] == "MissingParameter"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert error_of(e)[0] == "InvalidParameterValue"


def test_fifo_deduplication_scope_throughput_limit_and_expired_receipts(sqs):
    """Per-group deduplication deduplicates within a group only; a per-group
    throughput limit needs it; an expired receipt handle no longer deletes
    a FIFO message (another consumer may have it by then)."""
    url = new_queue(sqs, "fifo", FifoQueue="true", DeduplicationScope="messageGroup",
                    FifoThroughputLimit="perMessageGroupId")
    one = sqs.send_message(QueueUrl=url, MessageBody="t1", MessageGroupId="tenant-1", MessageDeduplicationId="order-42")
    two = sqs.send_message(QueueUrl=url, MessageBody="t2", MessageGroupId="tenant-2", MessageDeduplicationId="order-42")
    again = sqs.send_message(QueueUrl=url, MessageBody="t1", MessageGroupId="tenant-1", MessageDeduplicationId="order-42")
    assert one["MessageId"] != two["MessageId"] and again["MessageId"] == one["MessageId"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1)["Messages"]
    assert sorted(m["Body"] for m in got) == ["t1", "t2"]
    for bad in ({"DeduplicationScope": "queue"},):
        with pytest.raises(ClientError) as e:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=bad)
        assert error_of(e)[0] == "InvalidAttributeValue"
    with pytest.raises(ClientError) as e:
        new_queue(sqs, "fifo", FifoQueue="true", FifoThroughputLimit="perMessageGroupId")
    assert error_of(e)[0] == "InvalidAttributeValue"
    # Once the one-second visibility has passed, the handles are refused and the messages stay.
    wait_for(lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
             ["Attributes"]["ApproximateNumberOfMessages"] == "2", "the messages to be visible again")
    with pytest.raises(ClientError) as e:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    assert error_of(e)[0] == "InvalidParameterValue" and "The receipt handle has expired." in error_of(e)[1]
    failed = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "a", "ReceiptHandle": got[1]["ReceiptHandle"]}])
    assert [f["Code"] for f in failed["Failed"]] == ["InvalidParameterValue"]
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]) == 2


def test_a_fifo_queues_delay_is_retroactive(sqs):
    """As AWS documents: changing a FIFO queue's DelaySeconds changes the
    delay of the messages already in it (a standard queue's does not)."""
    fifo = new_queue(sqs, "fifo", FifoQueue="true", ContentBasedDeduplication="true", DelaySeconds="600")
    std = new_queue(sqs, "std", DelaySeconds="600")
    sqs.send_message(QueueUrl=fifo, MessageBody="held", MessageGroupId="g")
    sqs.send_message(QueueUrl=std, MessageBody="held")
    assert "Messages" not in sqs.receive_message(QueueUrl=fifo)
    for url in (fifo, std):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "0"})
    got = sqs.receive_message(QueueUrl=fifo, WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in got] == ["held"]
    assert "Messages" not in sqs.receive_message(QueueUrl=std)


def test_fifo_content_based_deduplication(sqs):
    url = new_queue(sqs, "cbd", FifoQueue="true", ContentBasedDeduplication="true")
    one = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    two = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    sqs.send_message(QueueUrl=url, MessageBody="other", MessageGroupId="g")
    assert one["MessageId"] == two["MessageId"] and int(one["SequenceNumber"]) > 0
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["MessageDeduplicationId"])
    assert [m["Body"] for m in got["Messages"]] == ["same", "other"]
    assert got["Messages"][0]["Attributes"]["MessageDeduplicationId"] == hashlib.sha256(b"same").hexdigest()


def test_purge_and_tags(sqs):
    url = new_queue(sqs)
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "m"} for i in range(5)])
    sqs.purge_queue(QueueUrl=url)
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    with pytest.raises(ClientError) as e:
        sqs.purge_queue(QueueUrl=url)
    assert error_of(e)[0] == "AWS.SimpleQueueService.PurgeQueueInProgress"
    sqs.tag_queue(QueueUrl=url, Tags={"team": "a", "env": "test"})
    sqs.untag_queue(QueueUrl=url, TagKeys=["env"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a"}
    tagged = sqs.create_queue(QueueName=unique_name("tagged"), tags={"k": "v"})["QueueUrl"]
    assert sqs.list_queue_tags(QueueUrl=tagged)["Tags"] == {"k": "v"}


def test_query_protocol(server, sqs):
    name = unique_name("query")
    status, doc = query(server, {"Action": "CreateQueue", "QueueName": name,
                                 "Attribute.1.Name": "VisibilityTimeout", "Attribute.1.Value": "7",
                                 "Tag.1.Key": "via", "Tag.1.Value": "query"})
    assert status == 200, ET.tostring(doc)
    url = doc.find("q:CreateQueueResult/q:QueueUrl", NS).text
    assert url == f"{server.endpoint}/{ACCOUNT}/{name}"
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"via": "query"}
    status, doc = query(server, {"Action": "SendMessage", "QueueUrl": url, "MessageBody": "a & <b>",
                                 "MessageAttribute.1.Name": "k", "MessageAttribute.1.Value.DataType": "String",
                                 "MessageAttribute.1.Value.StringValue": "v"})
    assert status == 200
    sent = doc.find("q:SendMessageResult", NS)
    assert sent.find("q:MD5OfMessageBody", NS).text == hashlib.md5(b"a & <b>").hexdigest()
    assert sent.find("q:MD5OfMessageAttributes", NS).text
    # Older clients POST to the queue URL itself, without QueueUrl.
    status, doc = query(server, {"Action": "ReceiveMessage", "AttributeName.1": "All", "MessageAttributeName.1": "All"},
                        path=f"/{ACCOUNT}/{name}")
    assert status == 200, ET.tostring(doc)
    msg = doc.find("q:ReceiveMessageResult/q:Message", NS)
    assert msg.find("q:Body", NS).text == "a & <b>"
    attrs = {a.find("q:Name", NS).text: a.find("q:Value", NS).text for a in msg.findall("q:Attribute", NS)}
    assert attrs["ApproximateReceiveCount"] == "1"
    assert msg.find("q:MessageAttribute/q:Value/q:StringValue", NS).text == "v"
    # An empty result is still a result element: older SDKs' query parser
    # (botocore's among them) looks it up and failed with KeyError without it.
    for params in ({"Action": "ReceiveMessage", "QueueUrl": url}, {"Action": "ListQueueTags", "QueueUrl": new_queue(sqs)},
                   {"Action": "ListQueues", "QueueNamePrefix": "no-such-prefix"}):
        status, doc = query(server, params)
        assert status == 200 and doc.find(f"q:{params['Action']}Result", NS) is not None, ET.tostring(doc)
    status, doc = query(server, {"Action": "GetQueueAttributes", "QueueUrl": url, "AttributeName.1": "All"})
    attrs = {a.find("q:Name", NS).text: a.find("q:Value", NS).text
             for a in doc.findall("q:GetQueueAttributesResult/q:Attribute", NS)}
    assert attrs["VisibilityTimeout"] == "7" and attrs["ApproximateNumberOfMessagesNotVisible"] == "1"
    status, doc = query(server, {"Action": "DeleteQueue", "QueueUrl": url})
    assert status == 200 and doc.find("q:ResponseMetadata/q:RequestId", NS).text
    # Errors are <ErrorResponse> with the legacy codes.
    status, doc = query(server, {"Action": "GetQueueUrl", "QueueName": name})
    assert status == 400
    assert doc.find("q:Error/q:Code", NS).text == "AWS.SimpleQueueService.NonExistentQueue"
    assert doc.find("q:Error/q:Type", NS).text == "Sender"


def test_json_errors_carry_the_query_code(server):
    import json
    status, headers, body = signed_request(
        server, "POST", "/", json.dumps({"QueueName": "nope-" + unique_name()}).encode(), service="sqs",
        headers={"X-Amz-Target": "AmazonSQS.GetQueueUrl", "Content-Type": "application/x-amz-json-1.0"})
    assert status == 400
    assert json.loads(body)["__type"] == "com.amazonaws.sqs#QueueDoesNotExist"
    assert headers["x-amzn-query-error"] == "AWS.SimpleQueueService.NonExistentQueue;Sender"


def test_aws_cli(server):
    import json
    import os
    import shutil
    import subprocess
    key, secret = server.credentials()
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION=REGION, AWS_PAGER="")
    env.pop("AWS_PROFILE", None)

    def cli(*args):
        r = subprocess.run([shutil.which("aws"), "--endpoint-url", server.endpoint, "--output", "json", "sqs", *args],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if r.stdout.strip() else None

    url = cli("create-queue", "--queue-name", unique_name("cli"))["QueueUrl"]
    cli("send-message", "--queue-url", url, "--message-body", "from the cli")
    got = cli("receive-message", "--queue-url", url)
    assert got["Messages"][0]["Body"] == "from the cli"


def test_acknowledged_sends_survive_kill_9(private_server):
    srv = private_server()
    sqs = sqs_client(srv)
    url = sqs.create_queue(QueueName="durable")["QueueUrl"]
    bodies = set()
    for b in range(20):
        entries = [{"Id": str(i), "MessageBody": f"m{b}-{i}"} for i in range(10)]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
        bodies |= {e["MessageBody"] for e in entries}
    # Some in flight at the time of the kill: they come back (at least once)
    # when their visibility timeout ends, or at once if the kill beat the
    # record of their receive.
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=2)["Messages"]) == 10
    srv.kill()
    srv = private_server(data_dir=srv.data_dir)
    sqs = sqs_client(srv)
    url = sqs.get_queue_url(QueueName="durable")["QueueUrl"]
    seen = set()

    def drained():
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if got:
            seen.update(m["Body"] for m in got)
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
        return seen == bodies

    wait_for(drained, "every acknowledged message")
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []


def test_a_deduplication_id_outlives_its_deleted_message_and_a_kill_9(private_server):
    # Sent, received and deleted, then a producer retries after the node
    # restarted: within the five minutes the retry is the same message.
    srv = private_server()
    sqs = sqs_client(srv)
    url = sqs.create_queue(QueueName="once.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    first = sqs.send_message(QueueUrl=url, MessageBody="pay 10", MessageGroupId="g",
                             MessageDeduplicationId="payment-1")["MessageId"]
    [m] = sqs.receive_message(QueueUrl=url)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    srv.kill()
    srv = private_server(data_dir=srv.data_dir)
    sqs = sqs_client(srv)
    url = sqs.get_queue_url(QueueName="once.fifo")["QueueUrl"]
    again = sqs.send_message(QueueUrl=url, MessageBody="pay 10", MessageGroupId="g",
                             MessageDeduplicationId="payment-1")["MessageId"]
    assert again == first
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
    other = sqs.send_message(QueueUrl=url, MessageBody="pay 20", MessageGroupId="g",
                             MessageDeduplicationId="payment-2")["MessageId"]
    assert [m["MessageId"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == [other]


def test_a_query_nested_past_any_member_is_answered_and_the_node_stays_up(server, sqs):
    """Each `.` of a query parameter's name was a level of a tree walked
    recursively: 200,000 of them overflowed a server thread's stack, which
    aborted the node."""
    body = b"Action=ListQueues&Version=2012-11-05&" + b"a." * 200_000 + b"=1"
    status, _, raw = signed_request(server, "POST", "/", body, service="sqs",
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, raw[:300]
    assert ET.fromstring(raw).tag == "{%s}ListQueuesResponse" % NS["q"]
    assert server.proc.poll() is None
    sqs.list_queues()  # the node still answers


def test_a_presigned_query_cannot_carry_another_body(server, sqs):
    """A presigned SQS URL covers the body it was made for (here none).
    `UNSIGNED-PAYLOAD` was accepted undeclared, so whoever held a URL
    presigned that way (as S3's are) could send it with a body naming
    another action, which wins over the query's."""
    from botocore.auth import S3SigV4QueryAuth, SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from conftest import send
    name = unique_name("presigned")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    swapped = urllib.parse.urlencode({"Action": "DeleteQueue", "QueueUrl": url}).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    def presigned(signer):
        req = AWSRequest(method="GET", url=f"{server.endpoint}/?Action=GetQueueUrl&QueueName={name}")
        signer(Credentials(*server.credentials()), "sqs", REGION, expires=60).add_auth(req)
        return req.url

    status, _, raw = send("GET", presigned(SigV4QueryAuth))
    assert status == 200 and url.encode() in raw, raw[:300]
    for signer in (SigV4QueryAuth, S3SigV4QueryAuth):
        status, _, raw = send("GET", presigned(signer), swapped, form)
        assert status == 403 and b"SignatureDoesNotMatch" in raw, (signer, raw[:300])
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url


def test_a_receipt_handle_deletes_only_its_own_message_as_last_received(private_server):
    """Receipt handles were the queue's name, the message's sequence number
    (the node's, not the queue's) and a counter: a made-up one for queue A
    deleted the stored row of B's message (gone after a restart), and one
    from an earlier receive deleted a message received again since."""
    import base64
    srv = private_server()
    sqs = sqs_client(srv)
    a = sqs.create_queue(QueueName="qa")["QueueUrl"]
    b = sqs.create_queue(QueueName="qb")["QueueUrl"]
    sqs.send_message(QueueUrl=b, MessageBody="order")
    for seq in range(1, 20):
        for n in range(3):
            forged = base64.b64encode(f"qa\n{seq}\n{n}".encode()).decode()
            sqs.delete_message(QueueUrl=a, ReceiptHandle=forged)  # nothing of A's matches it

    sqs.send_message(QueueUrl=a, MessageBody="twice")
    first = sqs.receive_message(QueueUrl=a, VisibilityTimeout=0)["Messages"][0]
    again = sqs.receive_message(QueueUrl=a, VisibilityTimeout=600)["Messages"][0]
    assert again["MessageId"] == first["MessageId"] and again["ReceiptHandle"] != first["ReceiptHandle"]
    sqs.delete_message(QueueUrl=a, ReceiptHandle=first["ReceiptHandle"])  # succeeds, as on AWS
    attrs = sqs.get_queue_attributes(QueueUrl=a, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1", "the stale handle deleted nothing"

    srv.kill()
    srv = private_server(data_dir=srv.data_dir)
    sqs = sqs_client(srv)
    got = sqs.receive_message(QueueUrl=sqs.get_queue_url(QueueName="qb")["QueueUrl"])["Messages"]
    assert [m["Body"] for m in got] == ["order"]
    # Still in flight, or visible if the kill beat the record of the receive: there either way.
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName="qa")["QueueUrl"], AttributeNames=names)
    assert sum(int(attrs["Attributes"][n]) for n in names) == 1, attrs


def test_messages_in_flight_stay_in_flight_through_a_restart(private_server):
    """As on AWS, a restart of the node does not end a visibility timeout:
    the message is not handed to another consumer meanwhile (a FIFO group
    stays held), and its receipt handle still deletes it (a delete answered
    200 used to leave it, and it came back)."""
    srv = private_server()
    sqs = sqs_client(srv)
    std = sqs.create_queue(QueueName="work")["QueueUrl"]
    fifo = sqs.create_queue(QueueName="work.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    sqs.send_message(QueueUrl=std, MessageBody="job")
    for body in ("g-0", "g-1"):
        sqs.send_message(QueueUrl=fifo, MessageBody=body, MessageGroupId="g", MessageDeduplicationId=body)
    [job] = sqs.receive_message(QueueUrl=std, VisibilityTimeout=600)["Messages"]
    [first] = sqs.receive_message(QueueUrl=fifo, VisibilityTimeout=600)["Messages"]
    assert first["Body"] == "g-0"
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=30) == 0
    srv = private_server(data_dir=srv.data_dir)
    sqs = sqs_client(srv)
    std, fifo = (sqs.get_queue_url(QueueName=n)["QueueUrl"] for n in ("work", "work.fifo"))
    assert sqs.receive_message(QueueUrl=std).get("Messages", []) == []
    assert sqs.receive_message(QueueUrl=fifo).get("Messages", []) == [], "g is held by g-0"
    sqs.change_message_visibility(QueueUrl=std, ReceiptHandle=job["ReceiptHandle"], VisibilityTimeout=900)
    sqs.delete_message(QueueUrl=std, ReceiptHandle=job["ReceiptHandle"])
    sqs.delete_message(QueueUrl=fifo, ReceiptHandle=first["ReceiptHandle"])
    [second] = sqs.receive_message(QueueUrl=fifo)["Messages"]
    assert second["Body"] == "g-1"
    attrs = sqs.get_queue_attributes(QueueUrl=std, AttributeNames=["All"])["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")


def test_a_failed_move_task_leaves_the_messages_where_they_were(sqs):
    """Messages sent straight to a dead-letter queue have no source to go
    back to: the task fails and they stay (they vanished from the queue,
    in memory, until the next restart)."""
    dlq = new_queue(sqs, "dlq-direct")
    dlq_arn = arn_of(sqs, dlq)
    new_queue(sqs, "src-direct", RedrivePolicy=f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}')
    for i in range(5):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"direct-{i}")
    sqs.start_message_move_task(SourceArn=dlq_arn)
    failed = wait_for(lambda: [t for t in sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
                               if t["Status"] == "FAILED"], "the move task to fail")
    assert "no source queue" in failed[0]["FailureReason"]
    bodies = set()
    while got := sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=600).get("Messages"):
        bodies |= {m["Body"] for m in got}
    assert bodies == {f"direct-{i}" for i in range(5)}


def test_group_and_deduplication_ids_and_system_attributes_are_checked_and_counted(sqs):
    fifo = sqs.create_queue(QueueName=unique_name("ids") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    for kw in ({"MessageGroupId": "g\x01", "MessageDeduplicationId": "d"},
               {"MessageGroupId": "g" * 129, "MessageDeduplicationId": "d"},
               {"MessageGroupId": "g", "MessageDeduplicationId": "d" * 129},
               {"MessageGroupId": "g", "MessageDeduplicationId": "d é"}):
        with pytest.raises(ClientError) as e:
            sqs.send_message(QueueUrl=fifo, MessageBody="x", **kw)
        assert error_of(e)[0] == "InvalidParameterValue", kw
    sqs.send_message(QueueUrl=fifo, MessageBody="x", MessageGroupId="g-1:{ok}", MessageDeduplicationId="d" * 128)

    url = sqs.create_queue(QueueName=unique_name("sysattr"))["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x",
                         MessageSystemAttributes={"Anything": {"DataType": "String", "StringValue": "v"}})
    assert error_of(e)[0] == "InvalidParameterValue"
    trace = {"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793"}}
    assert sqs.send_message(QueueUrl=url, MessageBody="x", MessageSystemAttributes=trace)["MD5OfMessageSystemAttributes"]
    # It counts towards the message's 1 MiB, as on AWS.
    big = {"AWSTraceHeader": {"DataType": "String", "StringValue": "t" * 600_000}}
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="b" * 500_000, MessageSystemAttributes=big)
    assert error_of(e)[0] == "InvalidParameterValue"


def test_visibility_stays_within_12_hours_of_the_receive_and_numbers_are_numbers(sqs):
    url = sqs.create_queue(QueueName=unique_name("limits"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    handle = sqs.receive_message(QueueUrl=url, VisibilityTimeout=43200)["Messages"][0]["ReceiptHandle"]

    def refused():
        # 12 hours from now ends past 12 hours from the receive once any time
        # has passed (the node counts milliseconds: in the receive's own, it is allowed).
        try:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=43200)
            return None
        except ClientError as e:
            return e.response["Error"]
    error = wait_for(refused, "12 hours from now to be refused")
    assert error["Code"] == "InvalidParameterValue" and "43200 seconds" in error["Message"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=600)
    for attribute in ({"DataType": "Number", "StringValue": "NaN"},
                      {"DataType": "Number", "StringValue": "inf"},
                      {"DataType": "String." + "x" * 300, "StringValue": "v"}):
        with pytest.raises(ClientError) as e:
            sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes={"a": attribute})
        assert error_of(e)[0] == "InvalidParameterValue", attribute
    sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes={"a": {"DataType": "Number", "StringValue": "-1.5e3"}})


def test_message_bodies_are_kept_on_disk_not_in_memory(private_server):
    """A queue may hold more than the node's memory: 192 messages of 1 MiB
    (SQS's largest) leave the node's peak memory about where it was, and
    every body and attribute comes back whole, before and after a kill -9."""
    node = private_server()
    sqs = sqs_client(node)
    url = new_queue(sqs, "big")
    sqs.receive_message(QueueUrl=url)  # the receive path's own allocations, before the baseline
    before = node.peak_rss_mb()
    filler = "x" * ((1 << 20) - 64)
    for i in range(192):
        sqs.send_message(QueueUrl=url, MessageBody=f"{i:04d}{filler}",
                         MessageAttributes={"n": {"DataType": "Number", "StringValue": str(i)}})
    grown = node.peak_rss_mb() - before
    assert grown < 64, f"the node grew by {grown:.0f} MB holding 192 MB of messages"

    def receive_all(sqs):
        seen = {}
        while len(seen) < 192:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=2, WaitTimeSeconds=10,
                                      MessageAttributeNames=["All"]).get("Messages", [])
            assert got, f"only {len(seen)} of 192 received"
            for m in got:
                assert m["MD5OfBody"] == hashlib.md5(m["Body"].encode()).hexdigest()
                i = int(m["Body"][:4])
                assert m["Body"][4:] == filler and m["MessageAttributes"]["n"]["StringValue"] == str(i)
                seen[i] = m
        return sorted(seen)

    assert receive_all(sqs) == list(range(192))
    node.kill()
    node.start()
    # Visible again once their visibility timeout ends (a restart keeps it), read from disk whole.
    assert receive_all(sqs_client(node)) == list(range(192))


def test_concurrent_settings_changes_are_all_stored(private_server):
    """Tags and attributes set at once by many clients are all there after
    kill -9 (each change stored the whole settings document, and two racing
    to the store could leave the older one stored: acknowledged tags and a
    redrive policy were lost at the next start)."""
    srv = private_server()
    sqs = sqs_client(srv)
    dlq_url = sqs.create_queue(QueueName="settings-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    urls = [sqs.create_queue(QueueName=f"settings-{i}")["QueueUrl"] for i in range(4)]
    policy = f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"3"}}'
    calls = [(url, {"Tags": {f"t{j}": str(j)}}) for url in urls for j in range(12)]
    calls += [(url, {"Attributes": {"RedrivePolicy": policy}}) for url in urls]
    errors = []

    def change(url, what):
        try:
            client = sqs_client(srv)
            if "Tags" in what:
                client.tag_queue(QueueUrl=url, **what)
            else:
                client.set_queue_attributes(QueueUrl=url, **what)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=change, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    srv.kill()
    srv = private_server(data_dir=srv.data_dir)
    sqs = sqs_client(srv)
    for url in urls:
        assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {f"t{j}": str(j) for j in range(12)}
        got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
        assert json.loads(got.get("RedrivePolicy", "{}")) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}


def test_a_send_whose_client_gave_up_mid_commit_is_received(private_server):
    """The node answers after its commit; a client that stops waiting before
    then does not stop the send half way (stored, but not receivable until
    the next start, with its deduplication id answering the retry as a
    duplicate of a message nobody could receive). An outside transaction
    holds the store's write lock to keep the commit waiting."""
    srv = private_server()
    sqs = sqs_client(srv)
    url = sqs.create_queue(QueueName="impatient.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    with store_write_locked(srv), pytest.raises(ReadTimeoutError):
        impatient_client(srv, "sqs").send_message(QueueUrl=url, MessageBody="order-1", MessageGroupId="g",
                                                  MessageDeduplicationId="order-1")
    retried = sqs.send_message(QueueUrl=url, MessageBody="order-1", MessageGroupId="g",
                               MessageDeduplicationId="order-1")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5).get("Messages", [])
    assert [(m["Body"], m["MessageId"]) for m in got] == [("order-1", retried["MessageId"])]


def test_creates_of_one_name_at_once_are_one_create(sqs):
    """Eight deploy jobs create one queue at once, each with its own
    VisibilityTimeout: one creates it, the others are told it exists with
    other attributes (before, several were answered 200 with attributes they
    did not get, and some NonExistentQueue)."""
    for _ in range(3):
        name = unique_name("raced")
        barrier = threading.Barrier(8)

        def create(i):
            barrier.wait()
            try:
                sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(10 + i)})
                return i
            except ClientError as e:
                return e.response["Error"]["Code"]

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(create, range(8)))
        winners = [o for o in outcomes if isinstance(o, int)]
        assert len(winners) == 1 and outcomes.count("QueueAlreadyExists") == 7, outcomes
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        stored = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
        assert stored == {"VisibilityTimeout": str(10 + winners[0])}
