"""Functions use S3 as on AWS: the SDK the runtime ships (boto3, the SDK for
JavaScript v3's @aws-sdk/client-s3) reaches Nimbus through AWS_ENDPOINT_URL
with the environment's session credentials, without any configuration in
the function's code."""

import json

import boto3
import pytest
from botocore.config import Config

from conftest import REGION, ROLE, make_zip, unique_name

PYTHON = '''
import boto3

s3 = boto3.client("s3")

def handler(event, context):
    got = s3.get_object(Bucket=event["bucket"], Key=event["key"])
    body = got["Body"].read().decode()
    s3.put_object(Bucket=event["bucket"], Key=event["key"] + ".upper", Body=body.upper().encode(),
                  ContentType="text/plain")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=event["bucket"])["Contents"]]
    return {"body": body, "contentType": got["ContentType"], "keys": keys}
'''

NODE = '''
import { S3Client, GetObjectCommand, PutObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";

const s3 = new S3Client({});

export const handler = async (event) => {
  const got = await s3.send(new GetObjectCommand({ Bucket: event.bucket, Key: event.key }));
  const body = await got.Body.transformToString();
  await s3.send(new PutObjectCommand({
    Bucket: event.bucket, Key: event.key + ".upper", Body: body.toUpperCase(), ContentType: "text/plain",
  }));
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: event.bucket }));
  return { body, contentType: got.ContentType, keys: listed.Contents.map((o) => o.Key) };
};
'''

CASES = {
    "python": dict(Runtime="python3.11", Handler="app.handler", files={"app.py": PYTHON}),
    "nodejs": dict(Runtime="nodejs20.x", Handler="index.handler", files={"index.mjs": NODE}),
}


@pytest.mark.parametrize("sdk", CASES)
def test_a_function_reads_and_writes_objects_with_its_sdk(server, lam, sdk):
    server.wait_sdk(sdk)
    key, secret = server.credentials()
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                      aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))
    bucket = unique_name(f"fn-{sdk}").lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/hello world.txt", Body=b"hello from s3", ContentType="text/markdown")

    case = dict(CASES[sdk])
    name = unique_name(sdk)
    lam.create_function(FunctionName=name, Role=ROLE, Code={"ZipFile": make_zip(case.pop("files"))}, Timeout=30,
                        **case)
    r = lam.invoke(FunctionName=name, Payload=json.dumps({"bucket": bucket, "key": "in/hello world.txt"}))
    out = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, out
    assert out == {"body": "hello from s3", "contentType": "text/markdown",
                   "keys": ["in/hello world.txt", "in/hello world.txt.upper"]}
    written = s3.get_object(Bucket=bucket, Key="in/hello world.txt.upper")
    assert written["Body"].read() == b"HELLO FROM S3" and written["ContentType"] == "text/plain"
