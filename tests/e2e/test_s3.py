"""The S3 API with the real clients: boto3's `s3`, the aws CLI (`aws s3` and
`aws s3api`) and plain HTTP for presigned URLs and virtual-hosted requests.
Buckets, objects with their headers, ranges and conditions, checksums,
listings, signatures, and what survives `kill -9`."""

import base64
import datetime
import email.utils
import gzip
import hashlib
import http.client
import hmac
import json
import os
import random
import re
import shutil
import socket
import subprocess
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from unittest import mock
from urllib.parse import quote, urlparse

import boto3
import pytest
import requests
import xml.etree.ElementTree as ET
from botocore import UNSIGNED
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, Server, error_code, unique_name, wait_for


def s3_client(server, secret=None, **config):
    key, real_secret = server.credentials()
    return boto3.client(
        "s3", endpoint_url=server.endpoint, region_name=REGION,
        aws_access_key_id=key, aws_secret_access_key=secret or real_secret,
        config=Config(retries={"max_attempts": 1}, **config),
    )


def aws_s3(server, *args, check=True):
    """Runs the real aws CLI (`s3 ...` or `s3api ...`) with the server's keys."""
    key, secret = server.credentials()
    exe = shutil.which("aws")
    assert exe, "the aws CLI must be installed by the test command"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_DEFAULT_REGION=REGION, AWS_PAGER="")
    env.pop("AWS_PROFILE", None)
    r = subprocess.run([exe, "--endpoint-url", server.endpoint, "--output", "json", *args],
                       capture_output=True, text=True, env=env, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def xml_code(body):
    m = re.search(rb"<Code>([^<]*)</Code>", body)
    return m.group(1).decode() if m else None


def b64(digest):
    return base64.b64encode(digest).decode()


def crc32(data):
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def crc32c(data):
    """CRC-32C (Castagnoli), bitwise: botocore needs awscrt for it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return b64((crc ^ 0xFFFFFFFF).to_bytes(4, "big"))


def md5_etag(data):
    return f'"{hashlib.md5(data).hexdigest()}"'


@pytest.fixture(scope="module")
def s3server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("s3") / "data").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def s3(s3server):
    return s3_client(s3server)


@pytest.fixture
def bucket(s3):
    name = unique_name("bkt")
    s3.create_bucket(Bucket=name)
    return name


# --- buckets -----------------------------------------------------------------

def test_an_account_has_at_most_its_quota_of_buckets(tmp_path):
    node = Server(tmp_path / "data", args=["--isolation", "process", "--max-buckets", "3"]).start()
    try:
        s3 = s3_client(node)
        names = [unique_name("quota").lower() for _ in range(4)]
        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(lambda n: attempt(lambda: s3.create_bucket(Bucket=n)), names))
        # Created at once, and still no more than three.
        assert sorted(outcomes) == ["TooManyBuckets", "ok", "ok", "ok"], outcomes
        assert len(s3.list_buckets()["Buckets"]) == 3
        with pytest.raises(ClientError) as e:
            s3.create_bucket(Bucket=unique_name("quota").lower())
        assert e.value.response["Error"]["Message"] == "You have attempted to create more buckets than allowed"
        created = [n for n, o in zip(names, outcomes) if o == "ok"]
        # An existing name is still the existing bucket, not the quota (in
        # us-east-1, creating it again succeeds).
        assert attempt(lambda: s3.create_bucket(Bucket=created[0])) == "ok"
        assert len(s3.list_buckets()["Buckets"]) == 3
        s3.delete_bucket(Bucket=created[0])
        assert attempt(lambda: s3.create_bucket(Bucket=names[outcomes.index("TooManyBuckets")])) == "ok"
    finally:
        node.stop()


def attempt(call):
    try:
        call()
        return "ok"
    except ClientError as e:
        return e.response["Error"]["Code"]


def test_bucket_lifecycle(s3):
    name = unique_name("life")
    created = s3.create_bucket(Bucket=name)
    assert created["Location"] == f"/{name}"
    # Created again by its owner: in us-east-1 a success, for legacy
    # compatibility (BucketAlreadyOwnedByYou in every other region).
    assert s3.create_bucket(Bucket=name)["Location"] == f"/{name}"
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == REGION
    listed = s3.list_buckets()
    assert name in [b["Name"] for b in listed["Buckets"]]
    assert all(isinstance(b["CreationDate"], datetime.datetime) for b in listed["Buckets"])
    # Pages of max-buckets in name order, the prefix echoed.
    family = unique_name("pages")
    for n in range(5):
        s3.create_bucket(Bucket=f"{family}-{n}")
    first = s3.list_buckets(Prefix=family, MaxBuckets=2)
    assert [b["Name"] for b in first["Buckets"]] == [f"{family}-0", f"{family}-1"]
    assert first["Prefix"] == family and first["ContinuationToken"]
    pages = s3.get_paginator("list_buckets").paginate(Prefix=family, PaginationConfig={"PageSize": 2})
    assert [b["Name"] for p in pages for b in p["Buckets"]] == [f"{family}-{n}" for n in range(5)]
    for n in range(5):
        s3.delete_bucket(Bucket=f"{family}-{n}")
    # us-east-1 is the empty location constraint, as on AWS, and refused named.
    assert s3.get_bucket_location(Bucket=name).get("LocationConstraint") is None
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=unique_name("named"), CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
    assert error_code(e) == "InvalidLocationConstraint"

    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=name)
    assert error_code(e) == "BucketNotEmpty"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"x"
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=name)
    assert error_code(e) == "NoSuchBucket"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert error_code(e) == "NoSuchBucket"
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("name", [
    "ab", "a" * 64, "Upper-case", "under_score", "-leading", "trailing-", "two..dots",
    "192.168.5.4", "xn--punycode", "sthree-bucket", "bucket-s3alias", "bucket--ol-s3",
    "amzn-s3-demo-bucket", "bucket.mrap", "bucket--table-s3",
    # (`--x-s3` is refused too, but boto3 takes such names for S3 Express
    # directory buckets and sends them elsewhere.)
])
def test_invalid_bucket_names_are_refused(s3, name):
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=name)
    assert error_code(e) == "InvalidBucketName"
    assert e.value.response["Error"]["Message"] == "The specified bucket is not valid."
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_longest_and_dotted_bucket_names_are_valid(s3):
    for name in ("a" * 63, f"dotted.{os.getpid()}.name", "123"):
        s3.create_bucket(Bucket=name)
        s3.head_bucket(Bucket=name)
        s3.delete_bucket(Bucket=name)


# --- objects -----------------------------------------------------------------

def test_object_round_trip_with_metadata_and_standard_headers(s3, bucket):
    body = gzip.compress(b"hello, objects\n" * 100)
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    put = s3.put_object(
        Bucket=bucket, Key="doc.txt", Body=body, Metadata={"Color": "Blue", "x-origin": "test run"},
        ContentType="text/plain; charset=utf-8", ContentEncoding="gzip",
        ContentDisposition='attachment; filename="doc.txt"', CacheControl="max-age=60", Expires=expires,
        ContentLanguage="en",
    )
    assert put["ETag"] == md5_etag(body)
    for got in (s3.head_object(Bucket=bucket, Key="doc.txt"), s3.get_object(Bucket=bucket, Key="doc.txt")):
        assert got["ETag"] == md5_etag(body)
        assert got["ContentLength"] == len(body)
        assert got["ContentType"] == "text/plain; charset=utf-8"
        assert got["ContentEncoding"] == "gzip"
        assert got["ContentDisposition"] == 'attachment; filename="doc.txt"'
        assert got["CacheControl"] == "max-age=60"
        assert got["ContentLanguage"] == "en"
        assert got["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Wed, 02 Jan 2030 03:04:05 GMT"
        assert got["Metadata"] == {"color": "Blue", "x-origin": "test run"}
        assert got["AcceptRanges"] == "bytes"
        assert isinstance(got["LastModified"], datetime.datetime)
    assert s3.get_object(Bucket=bucket, Key="doc.txt")["Body"].read() == body
    # Response overrides, as a presigned download link would ask.
    over = s3.get_object(Bucket=bucket, Key="doc.txt", ResponseContentType="application/octet-stream",
                         ResponseContentDisposition="inline")
    assert (over["ContentType"], over["ContentDisposition"]) == ("application/octet-stream", "inline")
    # One that a header cannot carry (beyond ISO-8859-1) is refused, as S3 refuses it.
    link = s3.generate_presigned_url("get_object", Params={
        "Bucket": bucket, "Key": "doc.txt", "ResponseContentDisposition": 'attachment; filename="D’Arcy.pdf"'})
    refused = requests.get(link, timeout=30)
    assert refused.status_code == 400 and b"<Code>InvalidArgument</Code>" in refused.content, refused.content
    assert b"ISO-8859-1" in refused.content

    # A PUT without a Content-Type gets AWS's default.
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert s3.head_object(Bucket=bucket, Key="plain")["ContentType"] == "binary/octet-stream"
    # Replacing an object replaces its metadata too.
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"new")
    head = s3.head_object(Bucket=bucket, Key="doc.txt")
    assert head["Metadata"] == {} and "ContentEncoding" not in head and head["ETag"] == md5_etag(b"new")

    s3.delete_object(Bucket=bucket, Key="doc.txt")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="doc.txt")
    assert error_code(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="doc.txt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # Deleting what is not there succeeds, as on AWS.
    assert s3.delete_object(Bucket=bucket, Key="doc.txt")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_empty_object(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert put["ETag"] == md5_etag(b"")
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert (got["ContentLength"], got["Body"].read()) == (0, b"")


def test_ranges(s3, bucket):
    body = bytes(range(100))
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    cases = {
        "bytes=0-9": (body[:10], "bytes 0-9/100"),
        "bytes=90-": (body[90:], "bytes 90-99/100"),
        "bytes=-5": (body[95:], "bytes 95-99/100"),
        "bytes=95-500": (body[95:], "bytes 95-99/100"),
        "bytes=-500": (body, "bytes 0-99/100"),
    }
    for rng, (want, content_range) in cases.items():
        got = s3.get_object(Bucket=bucket, Key="r", Range=rng)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, rng
        assert got["ContentRange"] == content_range, rng
        assert got["ContentLength"] == len(want), rng
        assert got["Body"].read() == want, rng
    for rng in ("bytes=100-", "bytes=200-300"):
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=bucket, Key="r", Range=rng)
        assert error_code(e) == "InvalidRange", rng
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    # HEAD takes a Range as GET does: the part's length, or 416.
    head = s3.head_object(Bucket=bucket, Key="r", Range="bytes=2-3")
    assert (head["ResponseMetadata"]["HTTPStatusCode"], head["ContentLength"], head["ContentRange"]) == (
        206, 2, "bytes 2-3/100")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="r", Range="bytes=200-")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_conditional_gets(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    etag = put["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    before = modified - datetime.timedelta(hours=1)
    after = modified + datetime.timedelta(hours=1)

    def status(**kw):
        try:
            return s3.get_object(Bucket=bucket, Key="c", **kw)["ResponseMetadata"]["HTTPStatusCode"]
        except ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"]

    assert status(IfMatch=etag) == 200
    assert status(IfMatch='"0123456789abcdef0123456789abcdef"') == 412
    assert status(IfMatch="*") == 200
    assert status(IfNoneMatch=etag) == 304
    assert status(IfNoneMatch='"0123456789abcdef0123456789abcdef"') == 200
    assert status(IfModifiedSince=before) == 200
    assert status(IfModifiedSince=after) == 304
    assert status(IfModifiedSince=modified) == 304
    assert status(IfUnmodifiedSince=after) == 200
    assert status(IfUnmodifiedSince=before) == 412
    # RFC 9110's order, which AWS follows: If-Match wins over If-Unmodified-Since,
    # If-None-Match over If-Modified-Since.
    assert status(IfMatch=etag, IfUnmodifiedSince=before) == 200
    assert status(IfNoneMatch='"0123456789abcdef0123456789abcdef"', IfModifiedSince=after) == 200
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"00000000000000000000000000000000"')
    assert error_code(e) == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    # A 304 names what the client holds, as the 200 would (RFC 9110; caches revalidate with it).
    for kw in ({"IfNoneMatch": etag}, {"IfModifiedSince": after}):
        url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "c"})
        header = {"If-None-Match": etag} if "IfNoneMatch" in kw else {
            "If-Modified-Since": email.utils.formatdate(after.timestamp(), usegmt=True)}
        r = requests.get(url, headers=header)
        assert r.status_code == 304 and r.headers["ETag"] == etag, (kw, r.headers)
        assert email.utils.parsedate_to_datetime(r.headers["Last-Modified"]) == modified


KEYS = [
    "with space.txt", "plus+sign", "unicode/ünïcödé ✓ 日本.txt", "deep/nested/dir/file", "q?a=b&c=%20",
    "percent%2Fslash", "tilde~star*(paren)", "trailing/", "a;b,c:d@e=f$g",
]


def test_conditional_writes(s3, bucket):
    def put(body, **condition):
        try:
            return s3.put_object(Bucket=bucket, Key="lock", Body=body, **condition)["ETag"]
        except ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]

    first = put(b"first", IfNoneMatch="*")
    assert first == md5_etag(b"first")
    assert put(b"second", IfNoneMatch="*") == (412, "PreconditionFailed")
    assert put(b"second", IfMatch='"0123456789abcdef0123456789abcdef"') == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="lock")["Body"].read() == b"first"
    assert put(b"second", IfMatch=first) == md5_etag(b"second")
    assert put(b"third", IfMatch="*") == md5_etag(b"third")
    assert put(b"x", IfNoneMatch=first) == (501, "NotImplemented")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="never-written", Body=b"x", IfMatch=first)
    assert error_code(e) == "NoSuchKey"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="never-written")
    # CopyObject's destination takes the same conditions.
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="lock", CopySource=f"{bucket}/lock", IfNoneMatch="*",
                       MetadataDirective="REPLACE")
    assert error_code(e) == "PreconditionFailed"
    s3.copy_object(Bucket=bucket, Key="lock-copy", CopySource=f"{bucket}/lock", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="lock-copy")["Body"].read() == b"third"
    # Of writers racing to create one key, exactly one does (the lock pattern).
    def race(i):
        try:
            s3.put_object(Bucket=bucket, Key="raced", Body=b"writer %d" % i, IfNoneMatch="*")
            return i
        except ClientError as e:
            assert e.response["Error"]["Code"] == "PreconditionFailed"
            return None

    with ThreadPoolExecutor(8) as pool:
        results = [r for r in pool.map(race, range(8)) if r is not None]
    assert len(results) == 1, results
    assert s3.get_object(Bucket=bucket, Key="raced")["Body"].read() == b"writer %d" % results[0]


def test_conditional_deletes(s3, bucket):
    """DeleteObject's If-Match and DeleteObjects' per-key ETag: a delete whose
    ETag does not match is refused with 412 and deletes nothing."""
    etag = s3.put_object(Bucket=bucket, Key="cd", Body=b"keep me")["ETag"]
    wrong = '"0123456789abcdef0123456789abcdef"'
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=bucket, Key="cd", IfMatch=wrong)
    assert (error_code(e), e.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="cd")["Body"].read() == b"keep me"
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=bucket, Key="never-written", IfMatch=etag)
    assert error_code(e) == "NoSuchKey"
    s3.put_object(Bucket=bucket, Key="cd2", Body=b"two")
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "cd", "ETag": wrong}, {"Key": "cd2"}]})
    assert [(x["Key"], x["Code"]) for x in out.get("Errors", [])] == [("cd", "PreconditionFailed")]
    assert [x["Key"] for x in out["Deleted"]] == ["cd2"]
    assert s3.get_object(Bucket=bucket, Key="cd")["Body"].read() == b"keep me"
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "cd", "ETag": etag}]})
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="cd")
    s3.put_object(Bucket=bucket, Key="cd", Body=b"again")
    s3.delete_object(Bucket=bucket, Key="cd", IfMatch="*")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="cd")


def test_what_s3_refuses_and_names_in_buckets_objects_and_listings(s3server, s3, bucket):
    """A bucket of another region, an unknown storage class and bad listing
    parameters are refused as S3 refuses them; listings name owners as S3
    does, and every error document names its request."""
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=unique_name("elsewhere"), CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert error_code(e) == "IllegalLocationConstraintException"
    assert "The eu-west-1 location constraint is incompatible" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="sc", Body=b"x", StorageClass="BOGUS")
    assert error_code(e) == "InvalidStorageClass"
    with pytest.raises(ClientError) as e:
        s3.create_multipart_upload(Bucket=bucket, Key="sc", StorageClass="BOGUS")
    assert error_code(e) == "InvalidStorageClass"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="sc")
    s3.put_object(Bucket=bucket, Key="sc", Body=b"x", StorageClass="STANDARD_IA")
    for bad in ({"EncodingType": "foo"}, {"MaxKeys": -1}):
        with pytest.raises(ClientError) as e:
            s3.list_objects_v2(Bucket=bucket, **bad)
        assert error_code(e) == "InvalidArgument", bad
    owner = s3.list_buckets()["Owner"]
    assert [o["Owner"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == [owner]
    assert "Owner" not in s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert s3.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]["Owner"] == owner
    s3.create_multipart_upload(Bucket=bucket, Key="mpu")
    page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=0)
    assert not page.get("NextUploadIdMarker"), page
    r = requests.get(s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "absent"}))
    assert f"<RequestId>{r.headers['x-amz-request-id']}</RequestId>" in r.text, r.text


def test_keys_that_need_encoding_round_trip(s3server, s3, bucket):
    for k in KEYS:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    for k in KEYS:
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode(), k
    # boto3 asks for encoding-type=url and decodes what comes back.
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(KEYS)
    assert sorted(o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]) == sorted(KEYS)
    prefixes = s3.list_objects_v2(Bucket=bucket, Prefix="unicode/", Delimiter="/")
    assert [o["Key"] for o in prefixes["Contents"]] == ["unicode/ünïcödé ✓ 日本.txt"]
    # Without encoding-type, the XML carries the keys as they are (escaped for XML).
    status, _, raw = signed_s3(s3server, "GET", f"/{bucket}?list-type=2")
    assert status == 200
    assert "<Key>unicode/ünïcödé ✓ 日本.txt</Key>" in raw.decode() and b"<Key>q?a=b&amp;c=%20</Key>" in raw
    # A CR in a key is a character reference there, as S3 writes it: raw, an
    # XML parser reads it as a newline, and the key listed was not stored.
    s3.put_object(Bucket=bucket, Key="report\r.txt", Body=b"cr")
    status, _, raw = signed_s3(s3server, "GET", f"/{bucket}?list-type=2&prefix=report")
    keys = [k.text for k in ET.fromstring(raw).iter("{http://s3.amazonaws.com/doc/2006-03-01/}Key")]
    assert status == 200 and keys == ["report\r.txt"] and b"<Key>report&#xD;.txt</Key>" in raw, raw
    s3.delete_object(Bucket=bucket, Key="report\r.txt")
    # boto3's default presigned URL for a listing (Signature Version 2, which
    # signs the bucket as `/<bucket>/`).
    url = s3.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket})
    r = requests.get(url, timeout=30)
    assert r.status_code == 200 and b"<KeyCount>%d</KeyCount>" % len(KEYS) in r.content, r.text


def test_lifecycle_rules_are_announced_in_headers(s3, bucket):
    """As S3 does: the expiry a rule gives an object (its write's day plus
    the rule's days, at the next midnight UTC), and an upload's abort date."""
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 3},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}}]})
    put = s3.put_object(Bucket=bucket, Key="tmp/a", Body=b"a")
    written = s3.head_object(Bucket=bucket, Key="tmp/a")["LastModified"]
    day = (written + datetime.timedelta(days=3)).date() + datetime.timedelta(days=1)
    expected = f'expiry-date="{day.strftime("%a, %d %b %Y")} 00:00:00 GMT", rule-id="tmp"'
    assert put["Expiration"] == expected
    assert s3.head_object(Bucket=bucket, Key="tmp/a")["Expiration"] == expected
    assert s3.get_object(Bucket=bucket, Key="tmp/a")["Expiration"] == expected
    copied = s3.copy_object(Bucket=bucket, Key="tmp/b", CopySource={"Bucket": bucket, "Key": "tmp/a"})
    assert copied["Expiration"].endswith('rule-id="tmp"')
    assert "Expiration" not in s3.put_object(Bucket=bucket, Key="keep/a", Body=b"a")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="tmp/big")
    assert upload["AbortRuleId"] == "tmp" and upload["AbortDate"].hour == 0, upload
    part = s3.upload_part(Bucket=bucket, Key="tmp/big", UploadId=upload["UploadId"], PartNumber=1, Body=b"p")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="tmp/big", UploadId=upload["UploadId"],
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert done["Expiration"].endswith('rule-id="tmp"'), done
    assert "AbortDate" not in s3.create_multipart_upload(Bucket=bucket, Key="keep/big")


def test_key_length_limit(s3, bucket):
    longest = "k" * 1024
    s3.put_object(Bucket=bucket, Key=longest, Body=b"x")
    assert s3.get_object(Bucket=bucket, Key=longest)["Body"].read() == b"x"
    for key in ("k" * 1025, "é" * 513):
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        assert error_code(e) == "KeyTooLongError"
        assert e.value.response["Error"]["Message"] == "Your key is too long"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [longest]


# --- checksums ---------------------------------------------------------------

def test_default_crc32_header_and_etag(s3, bucket):
    body = os.urandom(70_000)
    put = s3.put_object(Bucket=bucket, Key="crc", Body=body)
    assert put["ETag"] == md5_etag(body)
    assert put["ChecksumCRC32"] == crc32(body)
    head = s3.head_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (crc32(body), "FULL_OBJECT")
    got = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert got["ChecksumType"] == put["ChecksumType"] == "FULL_OBJECT"
    assert got["Body"].read() == body  # botocore checks the CRC32 it was given


def test_aws_chunked_trailer_checksum(s3, bucket):
    """boto3 sends CRC32 in an aws-chunked trailer (STREAMING-UNSIGNED-PAYLOAD-TRAILER)
    over TLS; here it is made to do so over plain HTTP, on the wire as it would."""
    sent = []

    def capture(request, **_):
        sent.append(dict(request.headers))

    s3.meta.events.register("before-send.s3.PutObject", capture)
    try:
        https = lambda url: urlparse(url.replace("http://", "https://", 1))  # noqa: E731
        body = os.urandom(300_000)
        with mock.patch("botocore.httpchecksum.urlparse", https):
            put = s3.put_object(Bucket=bucket, Key="trailer", Body=body)
            s3.put_object(Bucket=bucket, Key="gz", Body=gzip.compress(b"zipped"), ContentEncoding="gzip")
            with pytest.raises(ClientError) as e:
                s3.put_object(Bucket=bucket, Key="trailer", Body=b"bad", ChecksumCRC32=crc32(b"other"))
    finally:
        s3.meta.events.unregister("before-send.s3.PutObject", capture)
    assert sent[0]["X-Amz-Content-SHA256"] == b"STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert (sent[0]["Content-Encoding"], sent[0]["X-Amz-Trailer"]) == (b"aws-chunked", b"x-amz-checksum-crc32")
    assert put["ETag"] == md5_etag(body)
    assert error_code(e) == "BadDigest"
    head = s3.head_object(Bucket=bucket, Key="trailer", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ContentLength"]) == (crc32(body), len(body))
    assert s3.get_object(Bucket=bucket, Key="trailer")["Body"].read() == body
    # aws-chunked is how the body was sent, not how the object is encoded:
    # stored, it made HTTP clients fail to decode a gzip object (`gzip,aws-chunked`).
    assert sent[1]["Content-Encoding"] == b"gzip,aws-chunked"
    assert "ContentEncoding" not in head
    assert s3.head_object(Bucket=bucket, Key="gz")["ContentEncoding"] == "gzip"
    s3.copy_object(Bucket=bucket, Key="gz-copy", CopySource={"Bucket": bucket, "Key": "gz"})
    assert s3.get_object(Bucket=bucket, Key="gz-copy")["ContentEncoding"] == "gzip"


def test_trailer_checksum_mismatch_stores_nothing(s3server, s3, bucket):
    """A hand-made aws-chunked body whose trailer names the wrong CRC32."""
    s3.put_object(Bucket=bucket, Key="t", Body=b"original")
    body = b"chunked data"
    wire = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n"
            + f"x-amz-checksum-crc32:{crc32(b'different')}\r\n\r\n".encode())
    headers = {
        "Content-Encoding": "aws-chunked", "X-Amz-Trailer": "x-amz-checksum-crc32",
        "X-Amz-Decoded-Content-Length": str(len(body)), "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    }
    status, _, resp = signed_s3(s3server, "PUT", f"/{bucket}/t", wire, headers)
    assert (status, xml_code(resp)) == (400, "BadDigest")
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == b"original"
    good = wire.replace(crc32(b"different").encode(), crc32(body).encode())
    # A decoded length the chunks do not add up to: a truncated (or overlong) body.
    for wrong in (len(body) + 5, len(body) - 5):
        status, _, resp = signed_s3(s3server, "PUT", f"/{bucket}/t", good,
                                    dict(headers, **{"X-Amz-Decoded-Content-Length": str(wrong)}))
        assert (status, xml_code(resp)) == (400, "IncompleteBody")
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == b"original"
    status, _, resp = signed_s3(s3server, "PUT", f"/{bucket}/t", good, headers)
    assert status == 200, resp
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == body


def test_explicit_checksum_algorithms(s3, bucket):
    body = b"checksummed " * 1000
    put = s3.put_object(Bucket=bucket, Key="sha", Body=body, ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == b64(hashlib.sha256(body).digest())
    head = s3.head_object(Bucket=bucket, Key="sha", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64(hashlib.sha256(body).digest())

    put = s3.put_object(Bucket=bucket, Key="c32c", Body=body, ChecksumCRC32C=crc32c(body))
    assert put["ChecksumCRC32C"] == crc32c(body)
    assert s3.head_object(Bucket=bucket, Key="c32c", ChecksumMode="ENABLED")["ChecksumCRC32C"] == crc32c(body)
    # Without ChecksumMode the checksum is not given, as on AWS.
    assert "ChecksumCRC32C" not in s3.head_object(Bucket=bucket, Key="c32c")


def test_digest_mismatches_store_nothing(s3, bucket):
    s3.put_object(Bucket=bucket, Key="keep", Body=b"old contents")
    old = s3.head_object(Bucket=bucket, Key="keep")
    wrong_md5 = b64(hashlib.md5(b"something else").digest())
    attempts = [
        dict(ContentMD5=wrong_md5),
        dict(ChecksumSHA256=b64(hashlib.sha256(b"something else").digest())),
        dict(ChecksumCRC32=crc32(b"something else")),
        dict(ChecksumCRC32C=crc32c(b"something else")),
    ]
    for kw in attempts:
        for key in ("keep", "fresh"):
            with pytest.raises(ClientError) as e:
                s3.put_object(Bucket=bucket, Key=key, Body=b"new contents", **kw)
            assert error_code(e) == "BadDigest", kw
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="keep", Body=b"new contents", ContentMD5="not-base64!")
    assert error_code(e) == "InvalidDigest"
    head = s3.head_object(Bucket=bucket, Key="keep")
    assert (head["ETag"], head["LastModified"]) == (old["ETag"], old["LastModified"])
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"old contents"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["keep"]
    good = s3.put_object(Bucket=bucket, Key="keep", Body=b"new", ContentMD5=b64(hashlib.md5(b"new").digest()))
    assert good["ETag"] == md5_etag(b"new")


def test_checksum_headers_s3_refuses_store_nothing(s3server, s3, bucket):
    """Two checksums at once, a value that is not its algorithm's base64, a
    value of another algorithm than the one named, and a name with no value
    are refused with S3's InvalidRequest, before anything is stored."""
    body = b"checksummed"
    sha = b64(hashlib.sha256(body).digest())
    cases = [
        ({"x-amz-checksum-crc32": crc32(body), "x-amz-checksum-sha256": sha},
         "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."),
        ({"x-amz-checksum-crc32": "!!!!"}, "Value for x-amz-checksum-crc32 header is invalid."),
        ({"x-amz-checksum-sha256": crc32(body)}, "Value for x-amz-checksum-sha256 header is invalid."),
        ({"x-amz-sdk-checksum-algorithm": "SHA256", "x-amz-checksum-crc32": crc32(body)},
         "Value for x-amz-sdk-checksum-algorithm header is invalid."),
        ({"x-amz-sdk-checksum-algorithm": "CRC32"},
         "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or x-amz-trailer headers were found."),
    ]
    for headers, message in cases:
        status, _, out = signed_s3(s3server, "PUT", f"/{bucket}/ck", body, headers=headers)
        assert status == 400 and b"<Code>InvalidRequest</Code>" in out, (headers, out)
        assert f"<Message>{message}</Message>".encode() in out, (headers, out)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="ck")
    # A composite multipart checksum is made of the parts' as Complete names them.
    up = s3.create_multipart_upload(Bucket=bucket, Key="mpu", ChecksumAlgorithm="CRC32")
    part = s3.upload_part(Bucket=bucket, Key="mpu", UploadId=up["UploadId"], PartNumber=1, Body=body,
                          ChecksumAlgorithm="CRC32")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert error_code(e) == "InvalidRequest" and "It was missing for part 1 in the request." in str(e.value)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumCRC32": part["ChecksumCRC32"]}]})
    assert done["ChecksumCRC32"].endswith("-1")


# --- listings ----------------------------------------------------------------

def test_listing_prefix_delimiter_start_after(s3, bucket):
    keys = ["a.txt", "photos/2024/jan.jpg", "photos/2024/feb.jpg", "photos/2025/mar.jpg", "photos/cover.jpg",
            "videos/clip.mp4", "z.txt"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    everything = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in everything["Contents"]] == sorted(keys)
    assert everything["KeyCount"] == len(keys) and not everything["IsTruncated"]
    first = everything["Contents"][0]
    assert first["Size"] == 1 and first["ETag"] == md5_etag(b"x") and first["StorageClass"] == "STANDARD"

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a.txt", "z.txt"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["photos/", "videos/"]
    assert top["KeyCount"] == 4

    photos = s3.list_objects_v2(Bucket=bucket, Prefix="photos/", Delimiter="/")
    assert [o["Key"] for o in photos["Contents"]] == ["photos/cover.jpg"]
    assert [p["Prefix"] for p in photos["CommonPrefixes"]] == ["photos/2024/", "photos/2025/"]
    assert photos["Prefix"] == "photos/"

    after = s3.list_objects_v2(Bucket=bucket, StartAfter="photos/2024/jan.jpg")
    assert [o["Key"] for o in after["Contents"]] == sorted(keys)[3:]
    assert after["StartAfter"] == "photos/2024/jan.jpg"

    # Paging one entry at a time through a delimited listing: prefixes count as entries.
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, Delimiter="/", MaxKeys=1, **kw)
        assert page["KeyCount"] == 1
        seen += [o["Key"] for o in page.get("Contents", [])] + [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == ["a.txt", "photos/", "videos/", "z.txt"]

    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="nothing/")
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="not a token")
    assert error_code(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket=unique_name("missing"))
    assert error_code(e) == "NoSuchBucket"

    # ListObjects (v1): Marker, and NextMarker with a delimiter.
    v1 = s3.list_objects(Bucket=bucket, Marker="photos/cover.jpg")
    assert [o["Key"] for o in v1["Contents"]] == ["videos/clip.mp4", "z.txt"]
    v1 = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2)
    assert v1["IsTruncated"] and v1["NextMarker"] == "photos/"
    v1 = s3.list_objects(Bucket=bucket, Delimiter="/", Marker=v1["NextMarker"])
    assert [p["Prefix"] for p in v1["CommonPrefixes"]] == ["videos/"]
    assert [o["Key"] for o in v1["Contents"]] == ["z.txt"]
    assert not v1["IsTruncated"]


def test_paging_thousands_of_keys(s3, bucket):
    keys = [f"many/{i:05d}" for i in range(2500)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b""), keys))
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="many/"))
    assert [p["KeyCount"] for p in pages] == [1000, 1000, 500]
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys
    v1 = list(s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 700}))
    assert [len(p["Contents"]) for p in v1] == [700, 700, 700, 400]
    assert [o["Key"] for p in v1 for o in p["Contents"]] == keys
    # A page size above 1,000 is capped at 1,000, as on AWS.
    assert s3.list_objects_v2(Bucket=bucket, MaxKeys=5000)["KeyCount"] == 1000


# --- signatures and presigned URLs -------------------------------------------

class PayloadAsSent(S3SigV4Auth):
    """Signs the X-Amz-Content-SHA256 a request carries (`UNSIGNED-PAYLOAD`,
    `STREAMING-UNSIGNED-PAYLOAD-TRAILER`), which S3SigV4Auth would replace."""

    def _modify_request_before_signing(self, request):
        sent = request.headers["X-Amz-Content-SHA256"]
        super()._modify_request_before_signing(request)
        del request.headers["X-Amz-Content-SHA256"]
        request.headers["X-Amz-Content-SHA256"] = sent


def signed_s3(server, method, path, body=b"", headers=None, host=None, secret=None, region=REGION):
    """A SigV4 request for service s3 sent with `requests` (`path` already
    URL-encoded: S3 signs it as sent); `host` signs and sends another Host
    header (virtual-hosted style) while connecting to 127.0.0.1."""
    key, real_secret = server.credentials()
    url = f"http://{host or f'127.0.0.1:{server.port}'}{path}"
    headers = dict(headers or {})
    headers.setdefault("X-Amz-Content-SHA256", hashlib.sha256(body).hexdigest())
    req = AWSRequest(method=method, url=url, data=body, headers=headers)
    PayloadAsSent(Credentials(key, secret or real_secret), "s3", region).add_auth(req)
    sent = dict(req.headers.items())
    if host:
        sent["Host"] = host
    r = requests.request(method, f"{server.endpoint}{path}", data=body, headers=sent, timeout=30)
    return r.status_code, r.headers, r.content


def test_a_304_has_no_body_length_and_a_list_header_may_come_in_lines(s3server, s3, bucket):
    """A 304 carried the length of the error document it dropped, which the
    AWS SDK for Rust waits for in vain; a Content-Encoding sent on two lines
    (that SDK's streamed gzip upload) was refused as a duplicate header."""
    etag = s3.put_object(Bucket=bucket, Key="cached", Body=b"twenty-five bytes of data")["ETag"]
    status, headers, body = signed_s3(s3server, "GET", f"/{bucket}/cached", headers={"If-None-Match": etag})
    assert (status, body) == (304, b"")
    assert "Content-Length" not in headers and headers["ETag"] == etag, headers

    payload = b"two encodings"
    key, secret = s3server.credentials()
    req = AWSRequest(method="PUT", url=f"http://127.0.0.1:{s3server.port}/{bucket}/lines", data=payload,
                     headers={"Content-Encoding": "gzip,br", "X-Amz-Content-SHA256": hashlib.sha256(payload).hexdigest()})
    PayloadAsSent(Credentials(key, secret), "s3", REGION).add_auth(req)
    lines = [f"{name}: {value}" for name, value in req.headers.items() if name.lower() != "content-encoding"]
    head = "\r\n".join([f"PUT /{bucket}/lines HTTP/1.1", f"Host: 127.0.0.1:{s3server.port}", *lines,
                         "Content-Encoding: gzip", "Content-Encoding: br", f"Content-Length: {len(payload)}",
                         "Connection: close", "", ""])
    with socket.create_connection(("127.0.0.1", s3server.port), timeout=30) as sock:
        sock.sendall(head.encode() + payload)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert s3.head_object(Bucket=bucket, Key="lines")["ContentEncoding"] == "gzip,br"


def test_presigned_sigv4_get_and_put(s3server, s3, bucket):
    v4 = s3_client(s3server, signature_version="s3v4")
    key = "presigned/photo 1+2.jpg"
    put_url = v4.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    assert "X-Amz-Credential=" in put_url and "X-Amz-Signature=" in put_url
    r = requests.put(put_url, data=b"uploaded by a browser", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == md5_etag(b"uploaded by a browser")
    get_url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    r = requests.get(get_url, timeout=30)
    assert (r.status_code, r.content) == (200, b"uploaded by a browser")
    # A range works on a presigned URL too (the Range header is not signed).
    r = requests.get(get_url, headers={"Range": "bytes=0-7"}, timeout=30)
    assert (r.status_code, r.content) == (206, b"uploaded")

    # Tampered: another key, or a changed signature.
    s3.put_object(Bucket=bucket, Key="secret", Body=b"not for you")
    r = requests.get(get_url.replace(quote(key.split("/")[1]), "secret"), timeout=30)
    assert (r.status_code, xml_code(r.content)) == (403, "SignatureDoesNotMatch"), r.text
    sig = re.search(r"X-Amz-Signature=([0-9a-f]+)", get_url).group(1)
    forged = get_url.replace(sig, ("0" if sig[0] != "0" else "1") + sig[1:])
    r = requests.get(forged, timeout=30)
    assert (r.status_code, xml_code(r.content)) == (403, "SignatureDoesNotMatch"), r.text
    r = requests.get(get_url.replace("X-Amz-Expires=300", "X-Amz-Expires=3000"), timeout=30)
    assert (r.status_code, xml_code(r.content)) == (403, "SignatureDoesNotMatch"), r.text

    # Expired: signed two hours ago for one hour.
    past = datetime.datetime.utcnow() - datetime.timedelta(hours=2)
    with mock.patch("botocore.auth.get_current_datetime", lambda: past):
        old = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)
    r = requests.get(old, timeout=30)
    assert (r.status_code, xml_code(r.content)) == (403, "AccessDenied"), r.text
    # A PUT through an expired URL stores nothing.
    with mock.patch("botocore.auth.get_current_datetime", lambda: past):
        old_put = v4.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "late"}, ExpiresIn=60)
    r = requests.put(old_put, data=b"too late", timeout=30)
    assert (r.status_code, xml_code(r.content)) == (403, "AccessDenied"), r.text
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="late")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_presigned_default_form(s3, bucket):
    """boto3's default presigned URL (SigV2 query: AWSAccessKeyId, Expires, Signature)."""
    s3.put_object(Bucket=bucket, Key="v2 key+x", Body=b"sigv2")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "v2 key+x"}, ExpiresIn=300)
    r = requests.get(url, timeout=30)
    assert (r.status_code, r.content) == (200, b"sigv2"), r.text
    put = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "v2put"}, ExpiresIn=300)
    assert requests.put(put, data=b"via v2", timeout=30).status_code == 200
    assert s3.get_object(Bucket=bucket, Key="v2put")["Body"].read() == b"via v2"
    if "AWSAccessKeyId=" in url:
        expired = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "v2 key+x"},
                                            ExpiresIn=-60)
        r = requests.get(expired, timeout=30)
        assert (r.status_code, xml_code(r.content)) == (403, "AccessDenied"), r.text
        tampered = re.sub(r"Signature=[^&]+", "Signature=AAAAAAAAAAAAAAAAAAAAAAAAAAA%3D", url)
        r = requests.get(tampered, timeout=30)
        assert (r.status_code, xml_code(r.content)) == (403, "SignatureDoesNotMatch"), r.text


def test_wrong_secret_and_no_credentials(s3server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="private", Body=b"x")
    wrong = s3_client(s3server, secret="not-the-secret-0000000000000000000000000")
    for call in (lambda: wrong.list_buckets(), lambda: wrong.get_object(Bucket=bucket, Key="private"),
                 lambda: wrong.put_object(Bucket=bucket, Key="w", Body=b"x")):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "SignatureDoesNotMatch"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert e.value.response["Error"]["Message"].startswith("The request signature we calculated does not match")
    unknown = boto3.client("s3", endpoint_url=s3server.endpoint, region_name=REGION,
                           aws_access_key_id="AKIDUNKNOWN000000000", aws_secret_access_key="x" * 40)
    with pytest.raises(ClientError) as e:
        unknown.list_buckets()
    assert error_code(e) == "InvalidAccessKeyId"

    anonymous = boto3.client("s3", endpoint_url=s3server.endpoint, region_name=REGION,
                             config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    for call in (lambda: anonymous.get_object(Bucket=bucket, Key="private"),
                 lambda: anonymous.list_objects_v2(Bucket=bucket),
                 lambda: anonymous.put_object(Bucket=bucket, Key="anon", Body=b"x")):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert (error_code(e), e.value.response["Error"]["Message"]) == ("AccessDenied", "Access Denied")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="anon")


def test_signatures_aws_refuses_change_nothing(s3server, s3, bucket):
    """What the S3 protocol library lets through and AWS refuses, each
    with AWS's error, leaving the object as it was."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"original")
    key, secret = s3server.credentials()

    def sigv2_put(age_s, body):
        date = email.utils.formatdate(time.time() - age_s, usegmt=True)
        to_sign = f"PUT\n\n\n{date}\n/{bucket}/k"
        sig = base64.b64encode(hmac.new(secret.encode(), to_sign.encode(), "sha1").digest()).decode()
        return requests.put(f"{s3server.endpoint}/{bucket}/k", data=body, timeout=30,
                            headers={"Date": date, "Authorization": f"AWS {key}:{sig}"})

    # A SigV2 request from two hours ago (a captured one, replayed).
    r = sigv2_put(7200, b"replayed")
    assert (r.status_code, xml_code(r.content)) == (403, "RequestTimeTooSkewed"), r.text
    assert "<MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds>" in r.text
    # Signed for another region, in the header or a presigned URL.
    status, _, body = signed_s3(s3server, "PUT", f"/{bucket}/k", b"elsewhere", region="us-west-2")
    assert (status, xml_code(body)) == (400, "AuthorizationHeaderMalformed"), body
    assert b"the region 'us-west-2' is wrong; expecting 'us-east-1'" in body and b"<Region>us-east-1</Region>" in body
    west = boto3.client("s3", endpoint_url=s3server.endpoint, region_name="eu-west-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(signature_version="s3v4"))
    url = west.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)
    r = requests.put(url, data=b"elsewhere", timeout=30)
    assert (r.status_code, xml_code(r.content)) == (400, "AuthorizationQueryParametersError"), r.text
    # A presigned URL may live a week at most.
    v4 = s3_client(s3server, signature_version="s3v4")
    url = v4.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=604801)
    r = requests.put(url, data=b"for ever", timeout=30)
    assert (r.status_code, xml_code(r.content)) == (400, "AuthorizationQueryParametersError"), r.text
    assert "X-Amz-Expires must be less than a week" in r.text
    # Used after its time, or before it (signed a day ahead); a negative lifetime.
    url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=1)
    ahead = datetime.datetime.utcnow() + datetime.timedelta(days=1)
    with mock.patch("botocore.auth.get_current_datetime", lambda: ahead):
        early = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    wait_for(lambda: requests.get(url, timeout=30).status_code == 403, "the one-second URL to expire")
    r = requests.get(url, timeout=30)
    assert (xml_code(r.content), "<Message>Request has expired</Message>") == ("AccessDenied", re.search(
        "<Message>.*?</Message>", r.text)[0]) and "<X-Amz-Expires>1</X-Amz-Expires>" in r.text, r.text
    assert "<ServerTime>" in r.text and "<Expires>" in r.text
    r = requests.get(early, timeout=30)
    assert (r.status_code, xml_code(r.content)) == (403, "AccessDenied") and "Request is not yet valid" in r.text, r.text
    r = requests.get(url.replace("X-Amz-Expires=1", "X-Amz-Expires=-1"), timeout=30)
    assert (r.status_code, xml_code(r.content)) == (400, "AuthorizationQueryParametersError"), r.text
    assert "X-Amz-Expires must be non-negative" in r.text
    # A body that is not the one signed: its declared hash, or an aws-chunked chunk's signature.
    status, _, body = signed_s3(s3server, "PUT", f"/{bucket}/k", b"swapped",
                                {"X-Amz-Content-SHA256": hashlib.sha256(b"signed").hexdigest()})
    assert (status, xml_code(body)) == (400, "XAmzContentSHA256Mismatch"), body
    forged = "0" * 64
    wire = f"7;chunk-signature={forged}\r\nswapped\r\n0;chunk-signature={forged}\r\n\r\n".encode()
    status, _, body = signed_s3(s3server, "PUT", f"/{bucket}/k", wire, {
        "Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": "7",
        "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"})
    assert (status, xml_code(body)) == (403, "SignatureDoesNotMatch"), body
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"original"
    # The same SigV2 request, sent in time, is genuine.
    assert sigv2_put(0, b"in time").status_code == 200
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"in time"
    url = v4.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=604800)
    assert requests.put(url, data=b"a week", timeout=30).status_code == 200


# --- virtual-hosted style ----------------------------------------------------

def virtual_client(server, endpoint):
    """boto3 in virtual-hosted style for `endpoint`, and the hosts it sent:
    glibc does not resolve *.localhost, so each request goes to 127.0.0.1
    with the Host it was signed for."""
    key, secret = server.credentials()
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id=key, aws_secret_access_key=secret,
                          config=Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}))
    hosts = []

    def to_loopback(request, **_):
        netloc = urlparse(request.url).netloc
        hosts.append(netloc)
        request.headers["Host"] = netloc
        request.url = request.url.replace(netloc, f"127.0.0.1:{server.port}", 1)

    client.meta.events.register("before-send.s3", to_loopback)
    return client, hosts


def test_virtual_hosted_style(s3server, s3, bucket):
    host = f"{bucket}.s3.localhost:{s3server.port}"
    status, headers, body = signed_s3(s3server, "PUT", "/dir/v%20host.txt", b"virtual", host=host)
    assert status == 200, body
    assert s3.get_object(Bucket=bucket, Key="dir/v host.txt")["Body"].read() == b"virtual"
    status, _, body = signed_s3(s3server, "GET", "/dir/v%20host.txt", host=host)
    assert (status, body) == (200, b"virtual")
    status, _, body = signed_s3(s3server, "GET", "/?list-type=2&prefix=dir%2F", host=host)
    assert status == 200 and b"<Key>dir/v host.txt</Key>" in body
    status, _, body = signed_s3(s3server, "HEAD", "/", host=host)
    assert status == 200
    status, _, body = signed_s3(s3server, "GET", "/x", host=f"{unique_name('nobucket')}.s3.localhost:{s3server.port}")
    assert (status, xml_code(body)) == (404, "NoSuchBucket")
    # Unsigned, a virtual-hosted request is refused.
    r = requests.get(f"{s3server.endpoint}/dir/v%20host.txt", headers={"Host": host}, timeout=30)
    assert (r.status_code, xml_code(r.content)) == (403, "AccessDenied")

    # boto3 itself in virtual-hosted style.
    virtual, hosts = virtual_client(s3server, f"http://s3.localhost:{s3server.port}")
    virtual.put_object(Bucket=bucket, Key="boto/virtual.txt", Body=b"from boto3")
    assert virtual.get_object(Bucket=bucket, Key="boto/virtual.txt")["Body"].read() == b"from boto3"
    listed = virtual.list_objects_v2(Bucket=bucket, Prefix="boto/")
    assert [o["Key"] for o in listed["Contents"]] == ["boto/virtual.txt"]
    assert hosts and all(h == host for h in hosts)
    # A multipart upload's Location names the object as the client reached it.
    up = virtual.create_multipart_upload(Bucket=bucket, Key="boto/parts.bin")["UploadId"]
    part = virtual.upload_part(Bucket=bucket, Key="boto/parts.bin", UploadId=up, PartNumber=1, Body=b"p")
    done = virtual.complete_multipart_upload(Bucket=bucket, Key="boto/parts.bin", UploadId=up,
                                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert done["Location"] == f"http://{host}/boto/parts.bin"


def test_what_s3_refuses_by_its_headers_is_refused_not_ignored(s3server, s3, bucket):
    """A bucket owner other than the account, customer-provided keys over
    HTTP and Object Lock were accepted and ignored: a "locked" object could
    be deleted, and an SSE-C object was served as plaintext without its key."""
    def refused(call, status, code):
        with pytest.raises(ClientError) as e:
            call()
        assert (e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"]) == (status, code)

    s3.put_object(Bucket=bucket, Key="k", Body=b"v", ExpectedBucketOwner=ACCOUNT)
    refused(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", ExpectedBucketOwner="111111111111"), 403, "AccessDenied")
    refused(lambda: s3.list_objects_v2(Bucket=bucket, ExpectedBucketOwner="111111111111"), 403, "AccessDenied")
    refused(lambda: s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "k"},
                                   ExpectedSourceBucketOwner="111111111111"), 403, "AccessDenied")
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    refused(lambda: s3.put_object(Bucket=bucket, Key="locked", Body=b"x", ObjectLockMode="COMPLIANCE",
                                  ObjectLockRetainUntilDate=until), 400, "InvalidRequest")
    refused(lambda: s3.put_object(Bucket=bucket, Key="held", Body=b"x", ObjectLockLegalHoldStatus="ON"),
            400, "InvalidRequest")
    refused(lambda: s3.create_bucket(Bucket=unique_name("lock"), ObjectLockEnabledForBucket=True), 501, "NotImplemented")
    # boto3 refuses SSE-C over HTTP itself; sent as raw headers, as other clients do.
    key = base64.b64encode(b"k" * 32).decode()
    status, _, body = signed_s3(s3server, "PUT", f"/{bucket}/ssec", b"secret", headers={
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": key,
        "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(b"k" * 32).digest()).decode()})
    assert (status, xml_code(body)) == (400, "InvalidRequest")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["k"], keys
    # Copying an object onto itself to change its storage class is how S3 changes it.
    s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k"}, StorageClass="STANDARD_IA")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


def test_a_bucket_in_a_localhost_host_is_that_bucket(s3server, s3, bucket):
    # The SDKs that put the bucket in the host (JavaScript's, Java's, Go's)
    # do so for an endpoint of http://localhost:PORT, and a resolver may send
    # every *.localhost there. Read path-style, `DELETE /victim` would delete
    # the bucket `victim`.
    victim = unique_name("victim")
    s3.create_bucket(Bucket=victim)
    local, hosts = virtual_client(s3server, f"http://localhost:{s3server.port}")
    local.put_object(Bucket=bucket, Key=victim, Body=b"a key named like a bucket")
    assert local.get_object(Bucket=bucket, Key=victim)["Body"].read() == b"a key named like a bucket"
    assert [o["Key"] for o in local.list_objects_v2(Bucket=bucket)["Contents"]] == [victim]
    local.delete_object(Bucket=bucket, Key=victim)
    assert hosts and all(h == f"{bucket}.localhost:{s3server.port}" for h in hosts), hosts
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    s3.head_bucket(Bucket=victim)


def test_presigned_sigv4_query_headers_are_headers(s3server, s3, bucket):
    # The JavaScript SDK's presigner moves an object's x-amz-* headers into
    # the query it signs; S3 counts them as headers.
    key, secret = s3server.credentials()
    body = b"uploaded with a presigned URL"
    query = (f"x-amz-meta-owner=alice&x-amz-tagging={quote('team=x', safe='')}"
             f"&x-amz-checksum-sha256={quote(b64(hashlib.sha256(body).digest()), safe='')}")
    req = AWSRequest(method="PUT", url=f"{s3server.endpoint}/{bucket}/hoisted?{query}")
    S3SigV4QueryAuth(Credentials(key, secret), "s3", REGION, expires=300).add_auth(req)
    r = requests.put(req.url, data=body, timeout=30)
    assert r.status_code == 200, r.text
    head = s3.head_object(Bucket=bucket, Key="hoisted", ChecksumMode="ENABLED")
    assert head["Metadata"] == {"owner": "alice"}
    assert head["ChecksumSHA256"] == b64(hashlib.sha256(body).digest())
    assert s3.get_object_tagging(Bucket=bucket, Key="hoisted")["TagSet"] == [{"Key": "team", "Value": "x"}]
    # Another body than the checksum it was signed with stores nothing,
    # whatever headers of the same names the URL's holder sends: what was
    # signed wins.
    other = b"tampered on the way"
    r = requests.put(req.url, data=other, timeout=30)
    assert (r.status_code, xml_code(r.content)) == (400, "BadDigest"), r.text
    r = requests.put(req.url, data=other, timeout=30, headers={
        "x-amz-checksum-sha256": b64(hashlib.sha256(other).digest()), "x-amz-meta-owner": "mallory",
        "x-amz-tagging": "team=y"})
    assert (r.status_code, xml_code(r.content)) == (400, "BadDigest"), r.text
    assert s3.get_object(Bucket=bucket, Key="hoisted")["Body"].read() == body


# --- durability --------------------------------------------------------------

def data_files(data_dir):
    root = data_dir / "objects" / "data"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_acknowledged_put_survives_kill_9(private_server, tmp_path):
    srv = private_server()
    s3 = s3_client(srv)
    s3.create_bucket(Bucket="durable")
    body = os.urandom(200_000)
    s3.put_object(Bucket="durable", Key="acked", Body=body)
    srv.kill()
    srv = private_server(data_dir=srv.data_dir)
    s3 = s3_client(srv)
    got = s3.get_object(Bucket="durable", Key="acked")
    assert (got["Body"].read(), got["ETag"]) == (body, md5_etag(body))


def cut_off_put(server, path, total, sent):
    """Starts a signed PUT announcing `total` bytes, sends `sent` of them and
    returns the still-open socket."""
    key, secret = server.credentials()
    req = AWSRequest(method="PUT", url=f"{server.endpoint}{path}",
                     headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", "Content-Length": str(total)})
    PayloadAsSent(Credentials(key, secret), "s3", REGION).add_auth(req)
    head = f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers.items()) + "\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head.encode() + b"x" * sent)
    return sock


def test_cut_off_puts_never_appear(private_server):
    srv = private_server()
    s3 = s3_client(srv)
    s3.create_bucket(Bucket="cut")
    # Over the size kept in the database, so each has a data file.
    kept, before = os.urandom(100_000), os.urandom(100_000)
    s3.put_object(Bucket="cut", Key="kept", Body=kept)
    s3.put_object(Bucket="cut", Key="replaced", Body=before)
    files = data_files(srv.data_dir)
    assert len(files) == 2
    tmp = srv.data_dir / "objects" / "tmp"

    # The client goes away mid-body: the server drops what it had.
    sock = cut_off_put(srv, "/cut/replaced", 1 << 20, 300_000)
    wait_for(lambda: any(tmp.iterdir()), "the upload to start")
    sock.close()
    wait_for(lambda: not any(tmp.iterdir()), "the cut-off upload to be dropped")
    assert s3.get_object(Bucket="cut", Key="replaced")["Body"].read() == before
    assert data_files(srv.data_dir) == files

    # The server dies mid-body: nothing of it is there after a restart.
    sock = cut_off_put(srv, "/cut/half", 1 << 20, 300_000)
    wait_for(lambda: any(tmp.iterdir()), "the upload to start")
    srv.kill()
    sock.close()
    srv = private_server(data_dir=srv.data_dir)
    s3 = s3_client(srv)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="cut", Key="half")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="cut")["Contents"]] == ["kept", "replaced"]
    assert data_files(srv.data_dir) == files
    assert not any(tmp.iterdir())


# --- the aws CLI -------------------------------------------------------------

def test_aws_cli(s3server, s3, tmp_path):
    """`aws s3` mb/cp/sync/ls/rm/rb and `aws s3api` put/get/head-object. Each
    CLI run costs seconds of start-up, so independent ones run together."""
    name = unique_name("cli")
    assert f"make_bucket: {name}" in aws_s3(s3server, "s3", "mb", f"s3://{name}").stdout
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    # Over the CLI's 8 MiB threshold: uploaded in parts, downloaded in ranges.
    (src / "sub" / "b name.bin").write_bytes(os.urandom(9 << 20))
    (src / "sub" / "ü.txt").write_bytes(b"unicode")

    def together(*runs, check=True):
        with ThreadPoolExecutor(len(runs)) as pool:
            return list(pool.map(lambda args: aws_s3(s3server, *args, check=check), runs))

    _, _, put = together(
        ("s3", "cp", str(src / "a.txt"), f"s3://{name}/docs/a.txt"),
        ("s3", "sync", str(src), f"s3://{name}/tree/"),
        ("s3api", "put-object", "--bucket", name, "--key", "api/x.json", "--body", str(src / "a.txt"),
         "--content-type", "application/json", "--metadata", "k=v"),
    )
    assert json_of(put)["ETag"] == md5_etag(b"alpha")
    listed = aws_s3(s3server, "s3", "ls", "--recursive", f"s3://{name}/").stdout
    sizes = {line.split(maxsplit=3)[3]: int(line.split()[2]) for line in listed.splitlines()}
    assert sizes == {"api/x.json": 5, "docs/a.txt": 5, "tree/a.txt": 5, "tree/sub/b name.bin": 9 << 20,
                     "tree/sub/ü.txt": 7}
    assert s3.head_object(Bucket=name, Key="tree/sub/b name.bin")["ETag"].endswith('-2"')
    out = tmp_path / "out"
    _, _, head, got = together(
        ("s3", "cp", f"s3://{name}/docs/a.txt", str(tmp_path / "down.txt")),
        ("s3", "sync", f"s3://{name}/tree/", str(out)),
        ("s3api", "head-object", "--bucket", name, "--key", "api/x.json"),
        ("s3api", "get-object", "--bucket", name, "--key", "api/x.json", str(tmp_path / "x.json")),
    )
    assert (tmp_path / "down.txt").read_bytes() == b"alpha"
    for p in ("a.txt", "sub/b name.bin", "sub/ü.txt"):
        assert (out / p).read_bytes() == (src / p).read_bytes(), p
    # A listing's times are a GET's (whole seconds, as on S3): compared
    # exactly, nothing has changed, and a second sync downloads nothing.
    again = aws_s3(s3server, "s3", "sync", "--exact-timestamps", f"s3://{name}/tree/", str(out))
    assert again.stdout == "", again.stdout
    head = json_of(head)
    assert (head["ContentLength"], head["ContentType"], head["Metadata"]) == (5, "application/json", {"k": "v"})
    assert json_of(got)["ETag"] == md5_etag(b"alpha") and (tmp_path / "x.json").read_bytes() == b"alpha"

    refused, rm = together(("s3", "rb", f"s3://{name}"), ("s3", "rm", f"s3://{name}/docs/a.txt"), check=False)
    assert refused.returncode != 0 and "BucketNotEmpty" in refused.stderr
    assert rm.returncode == 0 and f"delete: s3://{name}/docs/a.txt" in rm.stdout
    assert "docs/a.txt" not in [o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]]
    # `rb --force` empties the bucket (`rm --recursive`) and removes it.
    assert f"remove_bucket: {name}" in aws_s3(s3server, "s3", "rb", "--force", f"s3://{name}").stdout
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def json_of(result):
    return json.loads(result.stdout)


def test_metadata_tags_and_declared_sizes_meet_aws_limits(s3, s3server, bucket, monkeypatch):
    """User metadata is at most 2 KB (it was unbounded: kept in every
    listing and cached read); tag keys may not start with `aws:` and hold
    only the characters tags allow; a body declared over 5 GiB is refused
    before it is read (it went to disk first)."""
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="meta", Body=b"x", Metadata={"big": "m" * 3000})
    assert error_code(e) == "MetadataTooLarge"
    with pytest.raises(ClientError) as e:
        s3.create_multipart_upload(Bucket=bucket, Key="meta", Metadata={"big": "m" * 3000})
    assert error_code(e) == "MetadataTooLarge"
    s3.put_object(Bucket=bucket, Key="meta", Body=b"x", Metadata={"ok": "m" * 2000})
    for key in ("aws:x", "a<>{}"):
        with pytest.raises(ClientError) as e:
            s3.put_object_tagging(Bucket=bucket, Key="meta", Tagging={"TagSet": [{"Key": key, "Value": "v"}]})
        assert error_code(e) == "InvalidTag", key
    s3.put_object_tagging(Bucket=bucket, Key="meta", Tagging={"TagSet": [{"Key": "team:é /x", "Value": "a+b=c@d"}]})

    req = AWSRequest(method="PUT", url=f"{s3server.endpoint}/{bucket}/huge",
                     headers={"Content-Length": str(6 << 30), "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    PayloadAsSent(Credentials(*s3server.credentials()), "s3", REGION).add_auth(req)
    host, port = urlparse(s3server.endpoint).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
        sock.sendall(f"PUT /{bucket}/huge HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode())
        answer = b""  # no byte of the body is sent
        while b"</Error>" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ") and xml_code(answer) == "EntityTooLarge", answer[:300]
    # Metadata is bounded by its size, not its number of entries (90 were a bare 431).
    many = {f"k{i}": "v" for i in range(150)}
    s3.put_object(Bucket=bucket, Key="many", Body=b"x", Metadata=many)
    # Python's own http.client reads at most 100 header fields of an answer, S3's as Nimbus's.
    monkeypatch.setattr(http.client, "_MAXHEADERS", 1000)
    assert s3.head_object(Bucket=bucket, Key="many")["Metadata"] == many


def test_an_aws_chunked_chunk_holds_the_body_budget(s3server, bucket):
    """`s3s` holds a whole chunk to check its signature, and a chunk may
    declare any size: one of 2 GiB is refused at once against the node's
    budget for request bodies (1 GiB), not held as it arrives."""
    size = 2 << 30
    req = AWSRequest(method="PUT", url=f"{s3server.endpoint}/{bucket}/chunky", headers={
        "Content-Encoding": "aws-chunked", "X-Amz-Trailer": "x-amz-checksum-crc32",
        "X-Amz-Decoded-Content-Length": str(size), "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "Content-Length": str(size + 100)})
    PayloadAsSent(Credentials(*s3server.credentials()), "s3", REGION).add_auth(req)
    host, port = urlparse(s3server.endpoint).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
        sock.sendall(f"PUT /{bucket}/chunky HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode()
                     + b"%x\r\n" % size + b"x" * 65536)
        answer = b""
        while b"</Error>" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ") and b"reading as much of request bodies" in answer, answer[:600]


def test_keys_holding_the_largest_character_are_listed_once(s3, bucket):
    """The listing went past a common prefix by appending U+10FFFF, which
    is not past a key holding it: the same prefix came back on every page."""
    for key in ("p/1", "p/\U0010ffffx", "z"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"k")
    paginator = s3.get_paginator("list_objects_v2")
    pages = list(paginator.paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 1}))
    prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert (prefixes, keys) == (["p/"], ["z"])
    # Resuming at the prefix itself (as ListObjects' NextMarker does) ends: it never answered.
    got = s3.list_objects_v2(Bucket=bucket, StartAfter="p/", Delimiter="/")
    assert [o["Key"] for o in got["Contents"]] == ["z"] and not got["IsTruncated"]


def test_a_key_being_overwritten_is_never_missing(s3, bucket):
    """S3 is strongly consistent: a GET or copy of a key that always exists
    answers the old object or the new one. Its file went with the version an
    overwrite replaced, between the lookup and the open: that was NoSuchKey."""
    s3.put_object(Bucket=bucket, Key="hot", Body=os.urandom(250_000))
    stop = threading.Event()

    def write():
        while not stop.is_set():
            s3.put_object(Bucket=bucket, Key="hot", Body=os.urandom(200_000 + random.randrange(100_000)))

    def read(n):
        missing = 0
        for i in range(150):
            for call in (lambda: s3.get_object(Bucket=bucket, Key="hot")["Body"].read(),
                         lambda: s3.copy_object(Bucket=bucket, Key=f"copy-{n}",
                                                CopySource={"Bucket": bucket, "Key": "hot"})):
                try:
                    call()
                except ClientError as e:
                    assert e.response["Error"]["Code"] == "NoSuchKey", e.response
                    missing += 1
        return missing

    with ThreadPoolExecutor(6) as pool:
        writers = [pool.submit(write) for _ in range(3)]
        try:
            missing = sum(r.result() for r in [pool.submit(read, n) for n in range(3)])
        finally:
            stop.set()
        for w in writers:
            w.result()
    assert missing == 0
