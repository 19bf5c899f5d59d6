"""Bucket lifecycle rules, driven with boto3 against a real server whose
clock runs a day per real second (`--test-clock-scale 86400`), so that the
midnight sweeps S3 makes once a day come every second: incomplete
multipart uploads are aborted and their parts' files freed, expired
objects are deleted, and what no rule names stays. Configurations S3
refuses are refused with its errors and change nothing."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, REPO, Server, error_code, unique_name, wait_for
from doc_blocks import code_blocks

MIB = 1 << 20
DAY_PER_SECOND = 86400


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    epoch_ms = int(time.time() * 1000)
    s = Server(tmp_path_factory.mktemp("lifecycle") / "data",
               args=["--test-clock-scale", str(DAY_PER_SECOND), "--test-clock-epoch-ms", str(epoch_ms)]).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def s3(fast):
    key, secret = fast.credentials()
    return boto3.client("s3", endpoint_url=fast.endpoint, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))


@pytest.fixture
def bucket(s3):
    name = unique_name("life")
    s3.create_bucket(Bucket=name)
    return name


def rule(rule_id, prefix, **actions):
    return {"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": prefix}, **actions}


def object_files(server):
    return {p.name for p in (Path(server.data_dir) / "objects" / "data").iterdir()}


def test_a_configuration_reads_back_and_refusals_change_nothing(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert error_code(e) == "NoSuchLifecycleConfiguration"
    rules = [rule("expire-tmp", "tmp/", Expiration={"Days": 7}),
             {"ID": "old-uploads", "Status": "Disabled", "Prefix": "",
              "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3}}]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == rules

    refused = [
        ([rule("z", "", Expiration={"Days": 0})], "InvalidArgument", "positive integer"),
        ([rule("d", "a/", Expiration={"Days": 1}), rule("d", "b/", Expiration={"Days": 1})],
         "InvalidArgument", "Rule ID must be unique"),
        ([rule("t", "", Transitions=[{"Days": 30, "StorageClass": "GLACIER"}])], "NotImplemented", "storage class"),
        ([{"ID": "a", "Status": "Enabled", "Filter": {"Tag": {"Key": "k", "Value": "v"}},
           "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}], "InvalidRequest", "Tags"),
    ]
    for bad, code, words in refused:
        with pytest.raises(ClientError) as e:
            s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": bad})
        assert (error_code(e), words in e.value.response["Error"]["Message"]) == (code, True), bad
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == rules

    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert error_code(e) == "NoSuchLifecycleConfiguration"


def test_incomplete_uploads_are_aborted_and_leave_no_files(s3, fast, bucket):
    before = object_files(fast)
    uploads = {}
    for key in ("tmp/big.bin", "keep/big.bin"):
        uploads[key] = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        s3.upload_part(Bucket=bucket, Key=key, UploadId=uploads[key], PartNumber=1, Body=b"p" * (5 * MIB))
    parts = object_files(fast) - before
    assert len(parts) == 2

    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        rule("abort-tmp", "tmp/", AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1})]})

    def open_keys():
        return {u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    # Its part's file goes after the abort's commit (a crash between them
    # leaves a file the next start removes, never a listed upload without one).
    wait_for(lambda: open_keys() == {"keep/big.bin"} and len(object_files(fast) & parts) == 1,
             "the tmp/ upload to be aborted and its part's file removed")
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="tmp/big.bin", UploadId=uploads["tmp/big.bin"])
    assert error_code(e) == "NoSuchUpload"
    # The upload no rule names is whole and can still complete.
    etag = s3.list_parts(Bucket=bucket, Key="keep/big.bin", UploadId=uploads["keep/big.bin"])["Parts"][0]["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="keep/big.bin", UploadId=uploads["keep/big.bin"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})


def test_objects_expire_by_prefix_and_tag(s3, bucket):
    for key in ("tmp/a", "tmp/b", "keep/c", "tagged/d", "tagged/e"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode(),
                      Tagging="state=done" if key == "tagged/d" else "state=open")
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        rule("expire-tmp", "tmp/", Expiration={"Days": 1}),
        {"ID": "expire-done", "Status": "Enabled", "Expiration": {"Days": 1},
         "Filter": {"And": {"Prefix": "tagged/", "Tags": [{"Key": "state", "Value": "done"}]}}}]})

    def keys():
        return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    wait_for(lambda: keys() == {"keep/c", "tagged/e"}, "tmp/ and tagged state=done objects to expire")
    assert s3.get_object(Bucket=bucket, Key="keep/c")["Body"].read() == b"keep/c"


def test_the_readme_rule_aborts_uploads(s3, fast, bucket):
    (block,) = [b for b in code_blocks(REPO / "README.md", "Object storage (S3)") if "lifecycle" in b]
    key, secret = fast.credentials()
    env = dict(os.environ, AWS_ENDPOINT_URL=fast.endpoint, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_DEFAULT_REGION=REGION, AWS_PAGER="")
    assert shutil.which("aws"), "the aws CLI must be installed by the test command"
    r = subprocess.run(["bash", "-ec", block.replace("photos", bucket)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    (got,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert got["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}


def test_lifecycle_and_notifications_set_at_once_are_both_kept(fast, s3):
    """Terraform sets a bucket's notifications and lifecycle in parallel: each
    call stored the whole bucket as it had read it, so one acknowledged
    configuration was overwritten by the other (notifications silently lost)."""
    import threading
    key, secret = fast.credentials()

    def client():
        return boto3.client("s3", endpoint_url=fast.endpoint, region_name=REGION, aws_access_key_id=key,
                            aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))
    function = f"arn:aws:lambda:{REGION}:123456789012:function:anything"
    buckets = [unique_name("both") for _ in range(10)]
    errors = []

    def call(f):
        try:
            f()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = []
    for b in buckets:
        s3.create_bucket(Bucket=b)
        notify, life = client(), client()
        threads += [
            threading.Thread(target=call, args=(lambda b=b, c=notify: c.put_bucket_notification_configuration(
                Bucket=b, SkipDestinationValidation=True, NotificationConfiguration={"LambdaFunctionConfigurations": [
                    {"LambdaFunctionArn": function, "Events": ["s3:ObjectCreated:*"]}]}),)),
            threading.Thread(target=call, args=(lambda b=b, c=life: c.put_bucket_lifecycle_configuration(
                Bucket=b, LifecycleConfiguration={"Rules": [rule("r", "tmp/", Expiration={"Days": 1})]}),)),
        ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for b in buckets:
        assert s3.get_bucket_notification_configuration(Bucket=b)["LambdaFunctionConfigurations"], b
        assert [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]] == ["r"], b
