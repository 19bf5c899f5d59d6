"""Signature Version 4: what is accepted and what each failure answers."""

import datetime
import hashlib
import json

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, Server, aws_client, aws_json, send, sign, signed_request

LIST = "/2015-03-31/functions"


def error_type(headers):
    return headers.get("x-amzn-ErrorType")


def test_valid_signature_lists(server):
    status, headers, body = signed_request(server, "GET", LIST)
    assert status == 200 and "Functions" in json.loads(body)
    assert headers.get("x-amzn-RequestId")


def test_wrong_secret(server):
    status, headers, body = signed_request(server, "GET", LIST, secret="not-the-secret")
    assert (status, error_type(headers)) == (403, "InvalidSignatureException")
    assert json.loads(body)["Type"] == "User"
    assert headers.get("x-amzn-RequestId")


def test_unknown_key(server):
    status, headers, _ = signed_request(server, "GET", LIST, key="AKIDUNKNOWN000000000")
    assert (status, error_type(headers)) == (403, "UnrecognizedClientException")


def test_no_authentication(server):
    status, headers, _ = send("GET", server.endpoint + LIST)
    assert (status, error_type(headers)) == (403, "MissingAuthenticationTokenException")


def test_each_service_refuses_an_unsigned_request_in_its_own_shape(server):
    """ECR, the Scheduler and SQS's query protocol answered S3's XML
    (`NotImplemented`, or `AccessDenied` 'Signature is required')."""
    json_11 = {"Content-Type": "application/x-amz-json-1.1"}
    status, headers, body = send("POST", server.endpoint + "/", b"{}", dict(
        json_11, **{"X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"}))
    assert (status, json.loads(body)) == (403, {
        "__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"})
    status, headers, body = send("GET", server.endpoint + "/schedules")
    assert (status, error_type(headers), json.loads(body)) == (
        403, "MissingAuthenticationTokenException", {"Message": "Missing Authentication Token"})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for method, path, body in (("GET", "/?Action=ListQueues", b""), ("POST", "/", b"Action=ListQueues"),
                               ("POST", "/000000000000/q", b"Action=SendMessage&MessageBody=x")):
        status, headers, out = send(method, server.endpoint + path, body, form if body else {})
        assert status == 403 and b"<Code>MissingAuthenticationToken</Code>" in out, (path, out)


def test_bodies_of_requests_without_a_key_are_not_held(private_server):
    """A body is read before its signature can be checked (it is signed
    too); an unknown key, a missing signature or a stale date are refused
    before the body is kept, so nobody without a key makes the node hold
    CreateFunction's 70 MB, twelve connections at once."""
    from concurrent.futures import ThreadPoolExecutor
    # A server of its own: its peak memory is this test's.
    server = private_server()
    body = b"x" * (60 << 20)
    before = server.peak_rss_mb()
    old = datetime.datetime.utcnow() - datetime.timedelta(minutes=10)
    requests = [(server.endpoint + LIST, {}), sign(server, "POST", LIST, body, key="AKIDUNKNOWN000000000"),
                sign(server, "POST", LIST, body, when=old)] * 4
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda r: send("POST", r[0], body, r[1]), requests))
    assert [(status, error_type(headers)) for status, headers, _ in answers[:3]] == [
        (403, "MissingAuthenticationTokenException"), (403, "UnrecognizedClientException"),
        (403, "InvalidSignatureException")]
    assert all(a[0] == 403 for a in answers)
    assert server.peak_rss_mb() - before < 200, "the node's peak memory grew by the bodies it was sent"


def test_clock_skew(server):
    old = datetime.datetime.utcnow() - datetime.timedelta(minutes=10)
    status, headers, body = signed_request(server, "GET", LIST, when=old)
    assert (status, error_type(headers)) == (403, "InvalidSignatureException")
    assert "Signature expired" in json.loads(body)["message"]
    future = datetime.datetime.utcnow() + datetime.timedelta(minutes=10)
    status, headers, body = signed_request(server, "GET", LIST, when=future)
    assert (status, error_type(headers)) == (403, "InvalidSignatureException")
    assert "not yet current" in json.loads(body)["message"]
    slightly_old = datetime.datetime.utcnow() - datetime.timedelta(minutes=3)
    assert signed_request(server, "GET", LIST, when=slightly_old)[0] == 200


def test_wrong_service_in_scope(server):
    # A scope naming a service Nimbus routes elsewhere (s3) goes there; one
    # it does not offer is refused as that service's request, whatever its path.
    status, headers, body = signed_request(server, "GET", LIST, service="iam")
    assert (status, error_type(headers)) == (400, "UnknownOperationException")
    assert "does not offer the AWS service 'iam'" in json.loads(body)["message"]


def test_presigned_query_string(server):
    status, _, body = signed_request(server, "GET", LIST, presign_expires=60)
    assert status == 200 and "Functions" in json.loads(body)
    old = datetime.datetime.utcnow() - datetime.timedelta(minutes=5)
    status, headers, body = signed_request(server, "GET", LIST, presign_expires=60, when=old)
    assert (status, error_type(headers)) == (403, "InvalidSignatureException")
    assert "expired" in json.loads(body)["message"]


def test_content_sha256_header_is_honoured(server):
    body = b"{}"
    bad = {"X-Amz-Content-SHA256": "0" * 64}
    status, headers, _ = signed_request(server, "POST", "/2015-03-31/functions", body=body, headers=bad)
    assert status == 400 and error_type(headers) == "XAmzContentSHA256Mismatch"
    unsigned = {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    status, headers, _ = signed_request(server, "GET", LIST, headers=unsigned)
    assert status == 200


def test_arn_in_path_is_signed_double_encoded(lam, server):
    # boto3 percent-encodes the ARN label; the server must sign it encoded twice.
    from conftest import arn, create
    name = create(lam)["FunctionName"]
    assert lam.get_function_configuration(FunctionName=arn(name), Qualifier="$LATEST")["FunctionName"] == name


def test_a_debug_log_holds_no_credentials_and_no_signature_to_replay(tmp_path):
    """With NIMBUS_LOG=debug, s3s logged each request's Authorization and,
    for a wrong signature, the one it computed: a reader of the log could
    sign as the node."""
    s = Server(tmp_path / "data", log="debug").start()
    try:
        aws_client(s, "s3").create_bucket(Bucket="logged")
        empty = {"X-Amz-Content-SHA256": hashlib.sha256(b"").hexdigest()}
        url, headers = sign(s, "GET", "/logged/k", b"", dict(empty), service="s3", secret="not-the-secret")
        status, _, _ = send("GET", url, headers=headers)
        assert status == 403
        _, secret = s.credentials()
        url, headers = sign(s, "GET", "/logged/k", b"", dict(empty), service="s3")
        assert send("GET", url, headers=headers)[0] == 404
        log = s.output()
        assert "DEBUG" in log, "the node logs at debug"
        signatures = [h.split("Signature=")[1] for h in (headers["Authorization"],)]
        assert "signature mismatch" not in log and "authorization" not in log.lower()
        assert not any(sig in log for sig in signatures) and secret not in log
    finally:
        s.stop()


def test_sts_get_caller_identity_names_the_account_and_refuses_the_rest(server):
    """Terraform's AWS provider, `aws sts get-caller-identity` and many
    scripts ask STS who they are before anything else, and stop when it
    fails. The node's key pair is the account's root (a function's session
    is checked in test_invoke's SDK test)."""
    sts = aws_client(server, "sts")
    identity = sts.get_caller_identity()
    assert {k: identity[k] for k in ("Account", "Arn", "UserId")} == {
        "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:root", "UserId": ACCOUNT}
    assert identity["ResponseMetadata"]["RequestId"] == identity["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    rc, out, err = aws_json(server, "sts", "get-caller-identity")
    assert rc == 0 and out == {"UserId": ACCOUNT, "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:root"}, err

    # Nimbus mints no credentials: other actions are unknown to it, in STS's own error shape.
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/r", RoleSessionName="session")
    assert e.value.response["Error"]["Code"] == "InvalidAction"
    assert e.value.response["Error"]["Message"] == "Could not find operation AssumeRole for version 2011-06-15"
    form = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    status, _, out = signed_request(server, "POST", "/", body=body, headers=form, service="sts",
                                    secret="not-the-secret")
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in out, out
    status, _, out = signed_request(server, "POST", "/", body=body, headers=form, service="sts",
                                    key="AKIDUNKNOWN000000000")
    assert status == 403 and b"<Code>InvalidClientTokenId</Code>" in out, out
