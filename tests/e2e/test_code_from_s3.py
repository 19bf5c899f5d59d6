"""Function and layer code deployed from the built-in object store
(`S3Bucket`/`S3Key`/`S3ObjectVersion`), as deployment tools do on AWS, and
AWS's answers when the object cannot be read or is not a valid package."""

import io
import json
import os
import zipfile

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, ROLE, aws_cli, code_sha256, create, error_code, make_zip, unique_name, wait_ready


@pytest.fixture(scope="module")
def s3(server):
    key, secret = server.credentials()
    return boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))


@pytest.fixture
def bucket(s3):
    name = unique_name("code")
    s3.create_bucket(Bucket=name)
    return name


def version_zip(v):
    return make_zip({"app.py": f"import os\ndef handler(event, context):\n    return {{'version': {v}}}\n"})


def invoke(lam, name):
    return json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())


def test_functions_and_layers_deploy_from_the_store(server, lam, s3, bucket):
    v1, v2 = version_zip(1), version_zip(2)
    s3.put_object(Bucket=bucket, Key="builds/v1.zip", Body=v1)
    s3.put_object(Bucket=bucket, Key="builds/v2.zip", Body=v2)
    name = unique_name()

    rc, cfg, err = aws_cli(server, "create-function", "--function-name", name, "--runtime", "python3.11",
                           "--handler", "app.handler", "--role", ROLE,
                           "--code", f"S3Bucket={bucket},S3Key=builds/v1.zip")
    assert rc == 0, err
    assert (cfg["CodeSha256"], cfg["CodeSize"]) == (code_sha256(v1), len(v1))
    wait_ready(lam, name)
    assert invoke(lam, name) == {"version": 1}

    # Buckets are not versioned: an object's one version is S3's "null".
    cfg = lam.update_function_code(FunctionName=name, S3Bucket=bucket, S3Key="builds/v2.zip", S3ObjectVersion="null")
    assert cfg["CodeSha256"] == code_sha256(v2)
    assert invoke(lam, name) == {"version": 2}

    layer = make_zip({"python/shared.py": "VALUE = 42\n"})
    s3.put_object(Bucket=bucket, Key="layers/shared.zip", Body=layer)
    lv = lam.publish_layer_version(LayerName=unique_name("layer"),
                                   Content={"S3Bucket": bucket, "S3Key": "layers/shared.zip"})
    assert (lv["Content"]["CodeSha256"], lv["Content"]["CodeSize"]) == (code_sha256(layer), len(layer))
    user = make_zip({"app.py": "import shared\ndef handler(event, context):\n    return {'value': shared.VALUE}\n"})
    create(lam, name=(user_name := unique_name()), zip_bytes=user, Layers=[lv["LayerVersionArn"]])
    assert invoke(lam, user_name) == {"value": 42}


def test_packages_over_the_inline_limit_deploy_from_the_store(lam, s3, bucket):
    """The reason the S3 route exists: a zip over the 50 MB a request may carry."""
    payload = os.urandom(60 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("app.py", "import os\ndef handler(event, context):\n"
                             "    return {'size': os.path.getsize(os.path.join(os.path.dirname(__file__), 'blob.bin'))}\n")
        z.writestr("blob.bin", payload)
    big = buf.getvalue()
    assert len(big) > 52_428_800
    s3.put_object(Bucket=bucket, Key="big.zip", Body=big)
    name = unique_name()
    cfg = create(lam, name=name, Code={"S3Bucket": bucket, "S3Key": "big.zip"})
    assert (cfg["CodeSize"], cfg["CodeSha256"]) == (len(big), code_sha256(big))
    assert invoke(lam, name) == {"size": len(payload)}


def assert_refused(call, message):
    with pytest.raises(ClientError) as e:
        call()
    assert error_code(e) == "InvalidParameterValueException"
    assert e.value.response["Error"]["Message"] == message
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unreadable_objects_get_aws_answers_and_store_nothing(lam, s3, bucket):
    name = unique_name()
    no_key = "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified key does not exist."
    assert_refused(lambda: create(lam, name=name, Code={"S3Bucket": bucket, "S3Key": "missing.zip"}), no_key)
    assert_refused(lambda: create(lam, name=name, Code={"S3Bucket": unique_name("nobucket"), "S3Key": "a.zip"}),
                   "Error occurred while GetObject. S3 Error Code: NoSuchBucket. "
                   "S3 Error Message: The specified bucket does not exist")
    s3.put_object(Bucket=bucket, Key="v1.zip", Body=version_zip(1))
    assert_refused(lambda: create(lam, name=name, Code={"S3Bucket": bucket, "S3Key": "v1.zip",
                                                        "S3ObjectVersion": "3sL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"}),
                   "Error occurred while GetObject. S3 Error Code: NoSuchVersion. "
                   "S3 Error Message: The specified version does not exist.")
    # The same gate as ZipFile: what is not a zip, and what unzips too large.
    s3.put_object(Bucket=bucket, Key="not-a.zip", Body=b"plain text")
    assert_refused(lambda: create(lam, name=name, Code={"S3Bucket": bucket, "S3Key": "not-a.zip"}),
                   "Could not unzip uploaded file. Please check your file, then try to upload again.")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("app.py", "def handler(e, c):\n    return 1\n")
        with z.open("zeros.bin", "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(251):
                f.write(chunk)
    s3.put_object(Bucket=bucket, Key="bomb.zip", Body=bomb.getvalue())
    assert_refused(lambda: create(lam, name=name, Code={"S3Bucket": bucket, "S3Key": "bomb.zip"}),
                   "Unzipped size must be smaller than 262144000 bytes")
    with pytest.raises(ClientError) as e:
        lam.get_function(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException"

    create(lam, name=name, Code={"S3Bucket": bucket, "S3Key": "v1.zip"})
    assert_refused(lambda: lam.update_function_code(FunctionName=name, S3Bucket=bucket, S3Key="missing.zip"), no_key)
    assert invoke(lam, name) == {"version": 1}, "the code in place stays"
    assert_refused(lambda: lam.publish_layer_version(LayerName=unique_name("layer"),
                                                     Content={"S3Bucket": bucket, "S3Key": "missing.zip"}), no_key)
