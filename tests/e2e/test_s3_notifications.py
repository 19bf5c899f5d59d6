"""Bucket notifications to Lambda functions, end to end: configured with the
aws CLI and boto3, validated as AWS validates them, delivered through the
outbox as Event invokes with AWS's record shape, retried by the async
policy, surviving kill -9, and stopped by recursive loop detection."""

import json
import os
import re
import shutil
import subprocess
import urllib.parse

import pytest
from botocore.exceptions import ClientError

from conftest import (ACCOUNT, REGION, ROLE, Server, arn, aws_client, logs_client, make_zip, unique_name, wait_for)

RECORDER = '''
import json

def handler(event, context):
    print("EVENT " + json.dumps(event))
'''

FAILING = '''
import json

def handler(event, context):
    print("EVENT " + json.dumps(event))
    raise RuntimeError("failing on purpose")
'''

# Writes the next object of a chain back into the bucket that invoked it:
# an infinite loop unless Lambda stops it (or it reaches $LAST).
LOOPING = '''
import json
import os
import boto3

s3 = boto3.client("s3")

def handler(event, context):
    record = event["Records"][0]
    key = record["s3"]["object"]["key"]
    print("EVENT " + json.dumps(event))
    n = int(key.split("/")[1])
    if n < int(os.environ.get("LAST", "1000000")):
        s3.put_object(Bucket=record["s3"]["bucket"]["name"], Key=f"loop/{n + 1}", Body=b"again")
'''


# The same with the SDK for JavaScript v3, whose recursion-detection
# middleware sends the trace id on as boto3 does.
LOOPING_NODE = '''
import { S3Client, PutObjectCommand } from "@aws-sdk/client-s3";

const s3 = new S3Client({});

export const handler = async (event) => {
  const record = event.Records[0];
  console.log("EVENT " + JSON.stringify(event));
  const n = Number(record.s3.object.key.split("/")[1]);
  await s3.send(new PutObjectCommand({ Bucket: record.s3.bucket.name, Key: `loop/${n + 1}`, Body: "again" }));
};
'''


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("s3notify") / "data", args=["--async-retry-delay", "0"]).start()
    yield s
    s.stop()


def s3_client(server):
    return aws_client(server, "s3")


def aws(server, *args):
    """The real aws CLI against the server; returns (returncode, stdout, stderr)."""
    key, secret = server.credentials()
    exe = shutil.which("aws")
    assert exe, "the aws CLI must be installed by the test command"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION=REGION,
               AWS_PAGER="")
    env.pop("AWS_PROFILE", None)
    r = subprocess.run([exe, "--endpoint-url", server.endpoint, *args], capture_output=True, text=True, env=env,
                       timeout=120)
    return r.returncode, r.stdout, r.stderr


def function(server, code=RECORDER, node=False, **kw):
    name = unique_name("s3fn")
    runtime, handler, file = ("nodejs20.x", "index.handler", "index.mjs") if node else \
        ("python3.11", "app.handler", "app.py")
    server.client().create_function(FunctionName=name, Runtime=runtime, Handler=handler, Role=ROLE,
                                    Code={"ZipFile": make_zip({file: code})}, **kw)
    return name


def allow_s3(server, name, bucket, account=ACCOUNT):
    code, _, err = aws(server, "lambda", "add-permission", "--function-name", name, "--statement-id", "s3",
                       "--action", "lambda:InvokeFunction", "--principal", "s3.amazonaws.com",
                       "--source-arn", f"arn:aws:s3:::{bucket}", "--source-account", account)
    assert code == 0, err


def rule(name, events=("s3:ObjectCreated:*", "s3:ObjectRemoved:*"), prefix=None, suffix=None):
    c = {"LambdaFunctionArn": arn(name), "Events": list(events)}
    filters = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v is not None]
    if filters:
        c["Filter"] = {"Key": {"FilterRules": filters}}
    return c


def notify(server, bucket, *rules):
    s3_client(server).put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": list(rules)})


def bucket(server):
    name = unique_name("bkt").lower()
    s3_client(server).create_bucket(Bucket=name)
    return name


def received(server, name):
    """The events a recorder function printed, in the order logged."""
    group = f"/aws/lambda/{name}"
    try:
        events = logs_client(server).filter_log_events(logGroupName=group)["events"]
    except ClientError:
        return []
    # Python prints the line as is; Node's console.log prefixes time, request id and level.
    return [json.loads(e["message"].split("EVENT ", 1)[1]) for e in events if "EVENT {" in e["message"]]


def loop_warnings(server, name):
    plain = re.sub(r"\x1b\[[0-9;]*m", "", server.output())
    return [line for line in plain.splitlines() if "recursive loop detected" in line and f"function={name}" in line]


def records(server, name, n, timeout=60):
    got = wait_for(lambda: len(received(server, name)) >= n and received(server, name), f"{n} event(s) for {name}",
                   timeout)
    return [e["Records"][0] for e in got]


def test_configuration_with_the_aws_cli_and_events_in_aws_shape(srv):
    name, b = function(srv), bucket(srv)
    allow_s3(srv, name, b)
    config = json.dumps({"LambdaFunctionConfigurations": [dict(rule(name), Id="all")]})
    code, _, err = aws(srv, "s3api", "put-bucket-notification-configuration", "--bucket", b,
                       "--notification-configuration", config)
    assert code == 0, err
    code, out, err = aws(srv, "s3api", "get-bucket-notification-configuration", "--bucket", b)
    assert code == 0, err
    got = json.loads(out)["LambdaFunctionConfigurations"]
    assert [(c["Id"], c["LambdaFunctionArn"], sorted(c["Events"])) for c in got] == \
        [("all", arn(name), ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"])]

    s3 = s3_client(srv)
    key = "dir/my photo+1=é.txt"
    put = s3.put_object(Bucket=b, Key=key, Body=b"hello")
    created = records(srv, name, 1)[0]
    s3.delete_object(Bucket=b, Key=key)
    removed = records(srv, name, 2)[1]

    assert created["eventVersion"] == "2.1" and created["eventSource"] == "aws:s3"
    assert created["awsRegion"] == REGION and created["eventName"] == "ObjectCreated:Put"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created["eventTime"])
    s3rec = created["s3"]
    assert s3rec["s3SchemaVersion"] == "1.0" and s3rec["configurationId"] == "all"
    assert s3rec["bucket"]["name"] == b and s3rec["bucket"]["arn"] == f"arn:aws:s3:::{b}"
    assert s3rec["object"]["key"] == "dir/my+photo%2B1%3D%C3%A9.txt"
    assert urllib.parse.unquote_plus(s3rec["object"]["key"]) == key
    assert s3rec["object"]["size"] == 5 and s3rec["object"]["eTag"] == put["ETag"].strip('"')

    assert removed["eventName"] == "ObjectRemoved:Delete"
    assert removed["s3"]["object"]["key"] == s3rec["object"]["key"]
    assert "size" not in removed["s3"]["object"] and "eTag" not in removed["s3"]["object"]
    first, second = s3rec["object"]["sequencer"], removed["s3"]["object"]["sequencer"]
    # AWS: compare sequencers as hexadecimal numbers, the shorter padded with zeros.
    assert int(second, 16) > int(first, 16)


def test_destinations_are_validated_as_aws_validates_them(srv):
    s3 = s3_client(srv)
    b = bucket(srv)

    def refused(*rules):
        with pytest.raises(ClientError) as e:
            notify(srv, b, *rules)
        return e.value.response["Error"]

    missing = unique_name("nofn")
    err = refused(rule(missing))
    assert err["Code"] == "InvalidArgument"
    assert err["Message"] == f"Unable to validate the following destination configurations: {arn(missing)}"

    name = function(srv)
    assert refused(rule(name))["Code"] == "InvalidArgument", "no policy statement for s3.amazonaws.com"
    allow_s3(srv, name, "another-bucket")
    assert "Unable to validate" in refused(rule(name))["Message"], "a grant for another bucket"

    other = function(srv)
    allow_s3(srv, other, b, account="999999999999")
    assert "Unable to validate" in refused(rule(other))["Message"], "a grant for another account"

    good = function(srv)
    allow_s3(srv, good, b)
    # The CLI gets the same answer.
    config = json.dumps({"LambdaFunctionConfigurations": [rule(missing)]})
    code, _, stderr = aws(srv, "s3api", "put-bucket-notification-configuration", "--bucket", b,
                          "--notification-configuration", config)
    assert code != 0 and "InvalidArgument" in stderr and "Unable to validate" in stderr

    overlap = refused(rule(good, ["s3:ObjectCreated:*"], prefix="images/"),
                      rule(good, ["s3:ObjectCreated:Put"], prefix="images/raw/"))
    assert overlap["Code"] == "InvalidArgument" and "overlap" in overlap["Message"]
    assert "LambdaFunctionConfigurations" not in s3.get_bucket_notification_configuration(Bucket=b)

    notify(srv, b, rule(good, ["s3:ObjectCreated:*"], prefix="images/"),
           rule(good, ["s3:ObjectCreated:*"], prefix="docs/"))
    assert len(s3.get_bucket_notification_configuration(Bucket=b)["LambdaFunctionConfigurations"]) == 2


def test_prefix_and_suffix_filters_choose_the_function(srv):
    images, docs, b = function(srv), function(srv), bucket(srv)
    allow_s3(srv, images, b)
    allow_s3(srv, docs, b)
    notify(srv, b, rule(images, ["s3:ObjectCreated:*"], prefix="images/", suffix=".jpg"),
           rule(docs, ["s3:ObjectCreated:Put"], prefix="docs/"))
    s3 = s3_client(srv)
    for key in ("images/a.png", "other/b.jpg", "images/c.jpg", "docs/d.txt"):
        s3.put_object(Bucket=b, Key=key, Body=b"x")
    # Events are queued with their write, in order: by the time the later
    # matching ones arrive, an earlier one would have been queued too.
    assert [r["s3"]["object"]["key"] for r in records(srv, images, 1)] == ["images/c.jpg"]
    assert [r["s3"]["object"]["key"] for r in records(srv, docs, 1)] == ["docs/d.txt"]
    s3.put_object(Bucket=b, Key="images/e.jpg", Body=b"x")
    assert [r["s3"]["object"]["key"] for r in records(srv, images, 2)] == ["images/c.jpg", "images/e.jpg"]
    assert len(received(srv, docs)) == 1 and len(received(srv, images)) == 2


def test_filters_match_the_encoded_key_and_events_name_the_request(srv):
    """AWS matches a rule's prefix against the key as the event carries it
    (`+` for a space, `%3D` for `=`); the event's request id is the one the
    writer was answered with."""
    name, b = function(srv), bucket(srv)
    allow_s3(srv, name, b)
    notify(srv, b, rule(name, ["s3:ObjectCreated:*"], prefix="my+folder/dt%3D1/"))
    s3 = s3_client(srv)
    s3.put_object(Bucket=b, Key="my folder/dt=0/a.txt", Body=b"x")
    answer = s3.put_object(Bucket=b, Key="my folder/dt=1/b.txt", Body=b"x")
    [record] = records(srv, name, 1)
    assert record["s3"]["object"]["key"] == "my+folder/dt%3D1/b.txt"
    headers = answer["ResponseMetadata"]["HTTPHeaders"]
    assert record["responseElements"] == {"x-amz-request-id": headers["x-amz-request-id"],
                                          "x-amz-id-2": headers["x-amz-id-2"]}
    assert record["requestParameters"] == {"sourceIPAddress": "127.0.0.1"}
    assert len(received(srv, name)) == 1


def test_a_failing_function_is_retried_by_the_async_policy(srv):
    name, b = function(srv, FAILING), bucket(srv)
    srv.client().put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    allow_s3(srv, name, b)
    notify(srv, b, rule(name))
    s3_client(srv).put_object(Bucket=b, Key="k", Body=b"x")
    got = records(srv, name, 2)
    # The same event twice (the first attempt and one retry), then given up.
    assert got[0] == got[1] and got[0]["s3"]["object"]["key"] == "k"
    wait_for(lambda: re.search(rf"function={name}\b.*giving up", srv.output()), "the event to be given up")
    assert len(received(srv, name)) == 2


@pytest.mark.parametrize("sdk", ["python", "nodejs"])
def test_recursive_loop_is_stopped_after_16_invocations(srv, sdk):
    srv.wait_sdk(sdk)
    name = function(srv, LOOPING_NODE if sdk == "nodejs" else LOOPING, node=sdk == "nodejs", Timeout=30)
    b = bucket(srv)
    allow_s3(srv, name, b)
    notify(srv, b, rule(name, ["s3:ObjectCreated:*"], prefix="loop/"))
    s3 = s3_client(srv)
    s3.put_object(Bucket=b, Key="loop/0", Body=b"start")
    line = wait_for(lambda: next(iter(loop_warnings(srv, name)), None), "the loop to be stopped", timeout=120)
    assert "WARN" in line and f"source=arn:aws:s3:::{b}" in line and "16 invocations" in line, line
    # 16 invocations ran (loop/0 … loop/15); the 16th wrote loop/16, whose
    # event was stopped.
    keys = sorted(int(r["s3"]["object"]["key"].split("/")[1]) for r in records(srv, name, 16))
    assert keys == list(range(16))
    assert s3.head_object(Bucket=b, Key="loop/16")["ContentLength"] == 5
    assert len(received(srv, name)) == 16
    with pytest.raises(ClientError):
        s3.head_object(Bucket=b, Key="loop/17")


def test_a_function_whose_recursion_config_is_allow_may_loop(srv):
    srv.wait_sdk("python")
    name, b = function(srv, LOOPING, Timeout=30, Environment={"Variables": {"LAST": "20"}}), bucket(srv)
    lam = srv.client()
    assert lam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Terminate"
    lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")
    allow_s3(srv, name, b)
    notify(srv, b, rule(name, ["s3:ObjectCreated:*"], prefix="loop/"))
    s3_client(srv).put_object(Bucket=b, Key="loop/0", Body=b"start")
    keys = sorted(int(r["s3"]["object"]["key"].split("/")[1]) for r in records(srv, name, 21, timeout=120))
    assert keys == list(range(21))
    assert not loop_warnings(srv, name)


def test_the_outbox_survives_kill_9(tmp_path):
    # The function fails until a marker file exists, and the async retry
    # delay is AWS's minute: after its first attempt the event waits in the
    # outbox. kill -9 then; the restarted node delivers it.
    calls, ok = tmp_path / "calls", tmp_path / "ok"
    code = f'''
import json, os

def handler(event, context):
    with open({str(calls)!r}, "a") as f:
        f.write(json.dumps(event) + "\\n")
    if not os.path.exists({str(ok)!r}):
        raise RuntimeError("not yet")
'''
    data = tmp_path / "data"
    first = Server(data, args=["--isolation", "process"]).start()
    try:
        name, b = function(first, code), bucket(first)
        allow_s3(first, name, b)
        notify(first, b, rule(name))
        s3_client(first).put_object(Bucket=b, Key="survivor", Body=b"x")
        wait_for(lambda: calls.exists() and calls.read_text().count("\n") == 1, "the first, failed attempt")
        ok.touch()
    finally:
        first.kill()
    second = Server(data, args=["--isolation", "process"]).start()
    try:
        wait_for(lambda: calls.read_text().count("\n") >= 2, "the event to be delivered after the restart", 60)
        attempts = [json.loads(x) for x in calls.read_text().splitlines()]
        assert attempts[0] == attempts[1] and attempts[0]["Records"][0]["s3"]["object"]["key"] == "survivor"
    finally:
        second.stop()
