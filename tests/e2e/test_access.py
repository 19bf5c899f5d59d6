"""What a function's own credentials may do, driven from inside a sandbox
with the runtime's boto3: the data services and invoking, and reading
itself; never another function's configuration or code, nor managing
compute. The node's key is unchanged."""
import base64
import json
import urllib.parse

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import ACCOUNT, REGION, ROLE, aws_client, create, make_zip, send, unique_name, wait_for

PROBE = '''
import json, time, boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1})


def attempt(call):
    try:
        call()
        return "allowed"
    except ClientError as e:
        return [e.response["Error"]["Code"], e.response["Error"]["Message"]]


def handler(event, context):
    lam = boto3.client("lambda", config=CONFIG)
    other, bucket, me = event["other"], event["bucket"], context.function_name
    s3 = boto3.client("s3", config=CONFIG)
    logs = boto3.client("logs", config=CONFIG)
    group = "/app/" + me
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="mine")
    calls = {
        "own configuration": lambda: lam.get_function_configuration(FunctionName=me),
        "own qualified ARN": lambda: lam.get_function(FunctionName=context.invoked_function_arn),
        "invoke another": lambda: lam.invoke(FunctionName=other, Payload=b"{}"),
        "write an object": lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"v"),
        "create a queue": lambda: boto3.client("sqs", config=CONFIG).create_queue(QueueName=event["queue"]),
        "another's configuration": lambda: lam.get_function_configuration(FunctionName=other),
        "another's code": lambda: lam.get_function(FunctionName=other),
        "list functions": lambda: lam.list_functions(),
        "change another": lambda: lam.update_function_configuration(
            FunctionName=other, Environment={"Variables": {"SECRET": "stolen"}}),
        "change itself": lambda: lam.update_function_configuration(FunctionName=me, Timeout=5),
        "create a function": lambda: lam.create_function(
            FunctionName=me + "-x", Runtime="python3.11", Role=event["role"], Handler="a.h",
            Code={"ZipFile": b"PK"}),
        "list repositories": lambda: boto3.client("ecr", config=CONFIG).describe_repositories(),
        "list clusters": lambda: boto3.client("ecs", config=CONFIG).list_clusters(),
        "list schedules": lambda: boto3.client("scheduler", config=CONFIG).list_schedules(),
        "write a log": lambda: logs.put_log_events(logGroupName=group, logStreamName="mine",
                                                   logEvents=[{"timestamp": int(time.time() * 1000), "message": "written"}]),
        "read another's log": lambda: logs.filter_log_events(logGroupName="/aws/lambda/" + other),
        "write another's log": lambda: logs.create_log_stream(logGroupName="/aws/lambda/" + other,
                                                              logStreamName="forged"),
        "delete another's log": lambda: logs.delete_log_group(logGroupName="/aws/lambda/" + other),
        "another's streams by ARN": lambda: logs.describe_log_streams(logGroupIdentifier=event["other_group_arn"]),
    }
    return {what: attempt(call) for what, call in calls.items()}
'''


def denied(action, resource="*"):
    return ["AccessDeniedException", f"is not authorized to perform: {action} on resource: {resource} because "
            f"no identity-based policy allows the {action} action"]


def test_a_functions_credentials_use_data_and_read_only_itself(server, lam):
    other = create(lam, Environment={"Variables": {"SECRET": "theirs"}})["FunctionName"]
    me = unique_name("access")
    lam.create_function(FunctionName=me, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                        Code={"ZipFile": make_zip({"app.py": PROBE})}, Timeout=60)
    bucket = unique_name("access").lower()
    aws_client(server, "s3").create_bucket(Bucket=bucket)
    # The other function has run, so its log group exists.
    lam.invoke(FunctionName=other)
    wait_for(lambda: aws_client(server, "logs").describe_log_groups(
        logGroupNamePrefix=f"/aws/lambda/{other}")["logGroups"], "the other function's log group")
    other_group_arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{other}"
    event = {"other": other, "bucket": bucket, "queue": unique_name("access"), "role": ROLE,
             "other_group_arn": other_group_arn}
    r = lam.invoke(FunctionName=me, Payload=json.dumps(event).encode())
    out = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, out
    user = f"User: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{me} "
    theirs = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{other}"
    expected = {
        "own configuration": "allowed",
        "own qualified ARN": "allowed",
        "invoke another": "allowed",
        "write an object": "allowed",
        "create a queue": "allowed",
        "another's configuration": denied("lambda:GetFunctionConfiguration", theirs),
        "another's code": denied("lambda:GetFunction", theirs),
        "list functions": denied("lambda:ListFunctions"),
        "change another": denied("lambda:UpdateFunctionConfiguration", theirs),
        "change itself": denied("lambda:UpdateFunctionConfiguration", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{me}"),
        "create a function": denied("lambda:CreateFunction"),
        "list repositories": denied("ecr:DescribeRepositories"),
        "list clusters": denied("ecs:ListClusters"),
        "list schedules": denied("scheduler:ListSchedules"),
        "write a log": "allowed",
        "read another's log": denied("logs:FilterLogEvents"),
        "write another's log": denied("logs:CreateLogStream", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{other}"),
        "delete another's log": denied("logs:DeleteLogGroup"),
        "another's streams by ARN": denied("logs:DescribeLogStreams", other_group_arn),
    }
    for what, answer in expected.items():
        got = out[what]
        if answer == "allowed":
            assert got == "allowed", (what, got)
        else:
            assert got[0] == answer[0] and got[1] == user + answer[1], (what, got)
    assert "theirs" not in json.dumps(out)
    # What was refused changed nothing; what was allowed happened.
    assert lam.get_function_configuration(FunctionName=other)["Environment"]["Variables"] == {"SECRET": "theirs"}
    assert lam.get_function_configuration(FunctionName=me)["Timeout"] == 60
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_configuration(FunctionName=me + "-x")
    assert aws_client(server, "s3").get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    logs = aws_client(server, "logs")
    written = logs.get_log_events(logGroupName=f"/app/{me}", logStreamName="mine")
    assert [e["message"] for e in written["events"]] == ["written"]
    assert logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{other}")["logGroups"], "not deleted"


KEYS = '''
import os

def handler(event, context):
    return {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
'''


def test_a_forged_host_does_not_get_another_request_signed_by_the_node(server, lam):
    """GetFunction's `Code.Location` is presigned with the node's key. A
    `Host` carrying a path and query made it sign a request of the caller's
    choosing (another function's configuration, read as the node)."""
    other = create(lam, Environment={"Variables": {"SECRET": "theirs"}})["FunctionName"]
    me = create(lam, zip_bytes=make_zip({"app.py": KEYS}))["FunctionName"]
    keys = json.loads(lam.invoke(FunctionName=me)["Payload"].read())
    netloc = urllib.parse.urlsplit(server.endpoint).netloc
    forged = f"{netloc}/2015-03-31/functions/{other}/configuration?a="
    req = AWSRequest(method="GET", url=f"{server.endpoint}/2015-03-31/functions/{me}", headers={"Host": forged})
    SigV4Auth(Credentials(keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"], keys["AWS_SESSION_TOKEN"]),
              "lambda", REGION).add_auth(req)
    status, _, body = send("GET", req.url, b"", dict(req.headers.items()))
    assert status == 200, body
    got = json.loads(body)
    sha = base64.b64decode(got["Configuration"]["CodeSha256"]).hex()
    location = urllib.parse.urlsplit(got["Code"]["Location"])
    assert (location.netloc, location.path) == (netloc, f"/_nimbus/code/{sha}"), got["Code"]["Location"]


def test_s3_takes_a_session_key_only_with_its_token_each_time(server, lam):
    """S3 kept a session's secret by its key once a request had carried the
    genuine token, and took the key without a token, or with any, after."""
    me = create(lam, zip_bytes=make_zip({"app.py": KEYS}))["FunctionName"]
    keys = json.loads(lam.invoke(FunctionName=me)["Payload"].read())
    bucket = unique_name("sess")
    node = aws_client(server, "s3")
    node.create_bucket(Bucket=bucket)

    def s3(token):
        return boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION,
                            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"], aws_session_token=token,
                            config=Config(retries={"max_attempts": 1}))

    s3(keys["AWS_SESSION_TOKEN"]).put_object(Bucket=bucket, Key="k", Body=b"with its token")
    for token, status, code in ((None, 403, "InvalidAccessKeyId"), ("garbage", 400, "InvalidToken"),
                                (keys["AWS_SESSION_TOKEN"][:-2] + "AA", 400, "InvalidToken")):
        for call in (lambda c: c.put_object(Bucket=bucket, Key="k", Body=b"without"),
                     lambda c: c.delete_object(Bucket=bucket, Key="k")):
            with pytest.raises(ClientError) as e:
                call(s3(token))
            got = (e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"])
            assert got == (status, code), (token, got)
    assert node.get_object(Bucket=bucket, Key="k")["Body"].read() == b"with its token"


PRESIGN = '''
import boto3
from botocore.config import Config

def handler(event, context):
    urls = {}
    for version in ("default", "s3v4"):
        config = Config(s3={"addressing_style": "path"}, **({} if version == "default" else {"signature_version": "s3v4"}))
        s3 = boto3.client("s3", config=config)
        params = {"Bucket": event["bucket"], "Key": version}
        urls[version] = {"put": s3.generate_presigned_url("put_object", Params=params),
                         "get": s3.generate_presigned_url("get_object", Params=params)}
    return urls
'''


def test_urls_a_function_presigns_with_its_own_credentials_work(server, lam):
    """A function handing out upload and download links signs them with its
    own session credentials, in whichever signature version boto3 picks."""
    bucket = unique_name("links").lower()
    aws_client(server, "s3").create_bucket(Bucket=bucket)
    me = create(lam, zip_bytes=make_zip({"app.py": PRESIGN}), Timeout=30)["FunctionName"]
    r = lam.invoke(FunctionName=me, Payload=json.dumps({"bucket": bucket}).encode())
    urls = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, urls


    def fetch(method, url, body=b""):
        # Made for the endpoint the function sees (its own loopback's port):
        # sent to the node's, with the host it was signed for. (`requests`
        # adds no Content-Type, which a SigV2 signature would cover.)
        parts = urllib.parse.urlsplit(url)
        return requests.request(method, f"{server.endpoint}{parts.path}?{parts.query}", data=body,
                                headers={"Host": parts.netloc}, timeout=30)

    for version, url in urls.items():
        r = fetch("PUT", url["put"], f"uploaded with {version}".encode())
        assert r.status_code == 200, (version, r.text)
        r = fetch("GET", url["get"])
        assert (r.status_code, r.content) == (200, f"uploaded with {version}".encode()), version


CALLER = '''
import json, os, urllib.request
import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

def handler(event, context):
    url = os.environ["AWS_ENDPOINT_URL"] + event["path"]
    req = AWSRequest(method="POST", url=url, data=b"{}")
    SigV4Auth(boto3.Session().get_credentials(), "lambda", os.environ["AWS_REGION"]).add_auth(req)
    call = urllib.request.Request(url, data=b"{}", method="POST", headers=dict(req.headers.items()))
    with urllib.request.urlopen(call, timeout=20) as r:
        return json.loads(r.read())
'''

WHO = '''
import json

def handler(event, context):
    return {"statusCode": 200, "body": json.dumps(event["requestContext"]["authorizer"]["iam"])}
'''


def test_an_aws_iam_url_called_with_a_functions_credentials_names_that_function(server, lam):
    callee = create(lam, zip_bytes=make_zip({"app.py": WHO}))["FunctionName"]
    url = lam.create_function_url_config(FunctionName=callee, AuthType="AWS_IAM")["FunctionUrl"]
    caller = create(lam, zip_bytes=make_zip({"app.py": CALLER}), Timeout=30)["FunctionName"]
    r = lam.invoke(FunctionName=caller, Payload=json.dumps({"path": urllib.parse.urlsplit(url).path}).encode())
    iam = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, iam
    assert iam["userArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{caller}", iam
    assert iam["accessKey"].startswith("NSIA") and iam["accountId"] == ACCOUNT
