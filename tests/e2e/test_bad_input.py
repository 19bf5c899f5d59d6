"""Bad input: each row gets AWS's error and leaves stored state unchanged."""

import base64
import json
import os

import pytest
from botocore.exceptions import ClientError

from conftest import HELLO_ZIP, ROLE, aws_client, blob_files, make_zip, signed_request

EXISTING = "existing-fn"
BASE = dict(Runtime="python3.11", Handler="app.handler", Role=ROLE)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from conftest import Server
    s = Server(tmp_path_factory.mktemp("bad") / "data").start()
    lam = s.client()
    lam.create_function(FunctionName=EXISTING, Code={"ZipFile": HELLO_ZIP}, Publish=True, **BASE)
    lam.publish_layer_version(LayerName="lay", Content={"ZipFile": HELLO_ZIP})
    yield s, lam
    s.stop()


def snapshot(server, lam):
    def strip(cfgs):
        return sorted(json.dumps({k: v for k, v in c.items() if k != "ResponseMetadata"}, sort_keys=True, default=str)
                      for c in cfgs)
    return {
        "functions": strip(lam.list_functions(FunctionVersion="ALL")["Functions"]),
        "existing": strip([lam.get_function(FunctionName=EXISTING)["Configuration"]]),
        "aliases": strip(lam.list_aliases(FunctionName=EXISTING)["Aliases"]),
        "layers": strip(lam.list_layers()["Layers"]),
        "usage": lam.get_account_settings()["AccountUsage"],
        "blobs": blob_files(server.data_dir),
    }


BOMB = make_zip({"zeros": b"\0" * 300_000_000})
TRUNCATED = HELLO_ZIP[: len(HELLO_ZIP) // 2]
# One entry more than a package may have (each costs an inode, and a block
# for a directory, that the unzipped size does not count).
CROWDED = make_zip({f"d{i}/f": b"" for i in range(100_001)})
# Each link, read alone, stays inside the package; unpacked in order, the
# file lands six levels above it (on the host, as the node unpacks).
THROUGH_LINK = make_zip({"a/d/a/d/a/d/e/etc/cron.d/x": "* * * * * root sh"}, {"a/d": "..", "a/d/a/d/a/d/e": "../../../../../.."})
LINK_THROUGH_LINK = make_zip({"app.py": "x"}, {"a/d": "..", "p": "a/d/a/d/../../../etc/passwd"})

ROWS = [
    # (id, operation, kwargs, expected code)
    ("corrupt zip", "create_function", dict(FunctionName="f1", Code={"ZipFile": os.urandom(2048)}, **BASE), "InvalidParameterValueException"),
    ("truncated zip", "create_function", dict(FunctionName="f2", Code={"ZipFile": TRUNCATED}, **BASE), "InvalidParameterValueException"),
    ("path traversal", "create_function", dict(FunctionName="f3", Code={"ZipFile": make_zip({"../../evil.py": "x"})}, **BASE), "InvalidParameterValueException"),
    ("absolute path", "create_function", dict(FunctionName="f4", Code={"ZipFile": make_zip({"/etc/cron.d/x": "x"})}, **BASE), "InvalidParameterValueException"),
    ("escaping symlink", "create_function", dict(FunctionName="f5", Code={"ZipFile": make_zip({"app.py": "x"}, {"link": "../../etc/passwd"})}, **BASE), "InvalidParameterValueException"),
    ("entries written through a symlink", "create_function", dict(FunctionName="f12", Code={"ZipFile": THROUGH_LINK}, **BASE), "InvalidParameterValueException"),
    ("layer written through a symlink", "publish_layer_version", dict(LayerName="lay", Content={"ZipFile": THROUGH_LINK}), "InvalidParameterValueException"),
    ("symlink through a symlink", "create_function", dict(FunctionName="f13", Code={"ZipFile": LINK_THROUGH_LINK}, **BASE), "InvalidParameterValueException"),
    ("zip bomb", "create_function", dict(FunctionName="f6", Code={"ZipFile": BOMB}, **BASE), "InvalidParameterValueException"),
    ("bomb as new code", "update_function_code", dict(FunctionName=EXISTING, ZipFile=BOMB), "InvalidParameterValueException"),
    ("too many entries", "create_function", dict(FunctionName="f19", Code={"ZipFile": CROWDED}, **BASE), "InvalidParameterValueException"),
    ("too many entries in a layer", "publish_layer_version", dict(LayerName="lay", Content={"ZipFile": CROWDED}), "InvalidParameterValueException"),
    ("bomb as layer", "publish_layer_version", dict(LayerName="lay", Content={"ZipFile": BOMB}), "InvalidParameterValueException"),
    ("bad name", "create_function", dict(FunctionName="bad name!", Code={"ZipFile": HELLO_ZIP}, **BASE), "ValidationException"),
    ("name too long", "create_function", dict(FunctionName="a" * 65, Code={"ZipFile": HELLO_ZIP}, **BASE), "ValidationException"),
    ("unknown runtime", "create_function", dict(FunctionName="f7", Code={"ZipFile": HELLO_ZIP}, **{**BASE, "Runtime": "ruby3.3"}), "InvalidParameterValueException"),
    ("memory too big", "create_function", dict(FunctionName="f8", Code={"ZipFile": HELLO_ZIP}, MemorySize=10241, **BASE), "InvalidParameterValueException"),
    ("timeout too long", "create_function", dict(FunctionName="f9", Code={"ZipFile": HELLO_ZIP}, Timeout=901, **BASE), "InvalidParameterValueException"),
    ("storage too big", "create_function", dict(FunctionName="f10", Code={"ZipFile": HELLO_ZIP}, EphemeralStorage={"Size": 10241}, **BASE), "InvalidParameterValueException"),
    ("env over 4KB", "create_function", dict(FunctionName="f11", Code={"ZipFile": HELLO_ZIP}, Environment={"Variables": {"BIG": "x" * 4100}}, **BASE), "InvalidParameterValueException"),
    ("reserved env key", "create_function", dict(FunctionName="f12", Code={"ZipFile": HELLO_ZIP}, Environment={"Variables": {"AWS_REGION": "x"}}, **BASE), "InvalidParameterValueException"),
    ("six layers", "create_function", dict(FunctionName="f13", Code={"ZipFile": HELLO_ZIP}, Layers=[f"arn:aws:lambda:us-east-1:123456789012:layer:lay:{i}" for i in range(1, 7)], **BASE), "InvalidParameterValueException"),
    ("no handler", "create_function", dict(FunctionName="f14", Code={"ZipFile": HELLO_ZIP}, Runtime="python3.11", Role=ROLE), "InvalidParameterValueException"),
    ("bad role", "create_function", dict(FunctionName="f15", Code={"ZipFile": HELLO_ZIP}, **{**BASE, "Role": "not-a-role"}), "ValidationException"),
    ("memory too big on update", "update_function_configuration", dict(FunctionName=EXISTING, MemorySize=20000), "InvalidParameterValueException"),
    ("reserved env on update", "update_function_configuration", dict(FunctionName=EXISTING, Environment={"Variables": {"TZ": "x"}}), "InvalidParameterValueException"),
    ("alias to missing version", "create_alias", dict(FunctionName=EXISTING, Name="a1", FunctionVersion="42"), "ResourceNotFoundException"),
    ("unknown function", "update_function_configuration", dict(FunctionName="missing", Timeout=5), "ResourceNotFoundException"),
    ("efs file system", "create_function", dict(FunctionName="f16", Code={"ZipFile": HELLO_ZIP}, FileSystemConfigs=[{
        "Arn": "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0123456789abcdef0",
        "LocalMountPath": "/mnt/x"}], **BASE), "InvalidParameterValueException"),
    ("subnets without groups", "create_function", dict(FunctionName="f17", Code={"ZipFile": HELLO_ZIP},
                                                      VpcConfig={"SubnetIds": ["subnet-1"]}, **BASE), "InvalidParameterValueException"),
    ("missing code signing config", "create_function", dict(
        FunctionName="f18", Code={"ZipFile": HELLO_ZIP},
        CodeSigningConfigArn="arn:aws:lambda:us-east-1:123456789012:code-signing-config:csc-0123456789abcdefg", **BASE),
     "CodeSigningConfigNotFoundException"),
    ("permission for $LATEST", "add_permission", dict(FunctionName=EXISTING, Qualifier="$LATEST", StatementId="s",
                                                      Action="lambda:InvokeFunction", Principal="*"), "InvalidParameterValueException"),
    ("missing layer version policy", "get_layer_version_policy", dict(LayerName="lay", VersionNumber=1), "ResourceNotFoundException"),
    # The model's UnqualifiedFunctionName pattern refuses a qualifier at the front door.
    ("recursion of a version", "put_function_recursion_config", dict(FunctionName=f"{EXISTING}:1", RecursiveLoop="Allow"),
     "ValidationException"),
]


@pytest.mark.parametrize("op, kwargs, code", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_table(env, op, kwargs, code):
    server, lam = env
    before = snapshot(server, lam)
    with pytest.raises(ClientError) as e:
        getattr(lam, op)(**kwargs)
    assert e.value.response["Error"]["Code"] == code
    expected_status = 404 if code.endswith("NotFoundException") else 400
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == expected_status
    assert snapshot(server, lam) == before


RAW_ROWS = [
    ("malformed json", "POST", "/2015-03-31/functions", b"{not json", 400, "InvalidRequestContentException"),
    ("wrong json type", "POST", "/2015-03-31/functions", b'{"FunctionName": 5}', 400, "InvalidRequestContentException"),
    ("json array", "PUT", f"/2015-03-31/functions/{EXISTING}/configuration", b"[1,2]", 400, "InvalidRequestContentException"),
    ("bad base64 zip", "POST", "/2015-03-31/functions",
     json.dumps({"FunctionName": "f20", "Code": {"ZipFile": "@@@"}, **BASE}).encode(), 400, "InvalidRequestContentException"),
    ("missing code", "POST", "/2015-03-31/functions", json.dumps({"FunctionName": "f21", **BASE}).encode(), 400, "ValidationException"),
    ("oversized body", "POST", "/2015-03-31/functions", b"x" * 69_905_068, 413, "RequestEntityTooLargeException"),
    ("unknown operation", "GET", "/2015-03-31/nothing-here", b"", 404, "UnknownOperationException"),
    ("code signing config without publishers", "POST", "/2020-04-22/code-signing-configs", b"{}", 400, "ValidationException"),
    ("unknown signing policy", "POST", "/2020-04-22/code-signing-configs",
     json.dumps({"AllowedPublishers": {"SigningProfileVersionArns": ["arn:aws:signer:us-east-1:123456789012:/signing-profiles/p"]},
                 "CodeSigningPolicies": {"UntrustedArtifactOnDeployment": "Maybe"}}).encode(), 400, "ValidationException"),
    ("unknown recursive loop", "PUT", f"/2024-08-31/functions/{EXISTING}/recursion-config",
     b'{"RecursiveLoop": "Sometimes"}', 400, "ValidationException"),
    ("unknown runtime update mode", "PUT", f"/2021-07-20/functions/{EXISTING}/runtime-management-config",
     b'{"UpdateRuntimeOn": "Never"}', 400, "ValidationException"),
    ("layer permission on a missing version", "POST", "/2018-10-31/layers/lay/versions/9/policy",
     b'{"StatementId": "s", "Action": "lambda:GetLayerVersion", "Principal": "*"}', 404, "ResourceNotFoundException"),
]


@pytest.mark.parametrize("method, path, body, status, code", [r[1:] for r in RAW_ROWS], ids=[r[0] for r in RAW_ROWS])
def test_bad_raw_requests(env, method, path, body, status, code):
    server, lam = env
    before = snapshot(server, lam)
    got_status, headers, resp = signed_request(server, method, path, body=body,
                                               headers={"Content-Type": "application/json"} if body else {})
    assert (got_status, headers.get("x-amzn-ErrorType")) == (status, code)
    assert json.loads(resp)["Type"] == "User"
    assert snapshot(server, lam) == before


def test_unknown_fields_are_ignored(env):
    server, lam = env
    body = json.dumps({"FunctionName": "future", "Code": {"ZipFile": base64.b64encode(HELLO_ZIP).decode()},
                       "DurableConfig": {"x": 1}, "TenancyConfig": {"TenantIsolationMode": "PER_TENANT"},
                       "NotInTheModel": {"x": [1]}, **BASE}).encode()
    status, _, _ = signed_request(server, "POST", "/2015-03-31/functions", body=body,
                                  headers={"Content-Type": "application/json"})
    assert status == 201
    lam.delete_function(FunctionName="future")


def json_call(server, service, target, body):
    """An awsJson request sent raw: boto3 would refuse a wrongly typed member itself."""
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
    status, headers, out = signed_request(server, "POST", "/", body=json.dumps(body).encode(), headers=headers,
                                          service=service)
    return status, json.loads(out) if out else None


@pytest.mark.parametrize("service, target, body", [
    # Each is refused by the model twice over: a member of the wrong JSON type
    # that the operation does not read, beside a value that breaks a rule.
    ("logs", "Logs_20140328.CreateLogGroup", {"logGroupName": "bad name!", "kmsKeyId": 5}),
    ("logs", "Logs_20140328.DescribeLogGroups", {"limit": 0, "accountIdentifiers": 5}),
    ("ecs", "AmazonEC2ContainerServiceV20141113.CreateCluster",
     {"clusterName": "c", "tags": [{"key": "", "value": "v"}], "settings": "x"}),
    ("ecr", "AmazonEC2ContainerRegistry_V20150921.DescribeImages",
     {"repositoryName": "r", "maxResults": 5000, "filter": "x"}),
])
def test_a_wrongly_typed_member_is_refused_before_any_rule(env, service, target, body):
    server, _ = env
    status, out = json_call(server, service, target, body)
    # As AWS's deserialiser refuses it; before, the other members' rules were skipped
    # and a group named "bad name!" was stored that no call could delete.
    assert (status, out["__type"]) == (400, "SerializationException"), out
    logs = aws_client(server, "logs")
    assert [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]] == []
    assert aws_client(server, "ecs").list_clusters()["clusterArns"] == []


def test_a_wrongly_typed_member_of_a_rest_json_service_is_refused(env):
    server, _ = env
    status, headers, out = signed_request(server, "POST", "/schedule-groups/bad%20name!", body=b'{"Tags": "x"}',
                                          headers={"Content-Type": "application/json"}, service="scheduler")
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException"), out
    assert "'tags'" in json.loads(out)["Message"]
    names = [g["Name"] for g in aws_client(server, "scheduler").list_schedule_groups()["ScheduleGroups"]]
    assert names == ["default"]


@pytest.mark.parametrize("service, call, code", [
    ("ssm", lambda c: c.get_parameter(Name="/app/db"), "UnknownOperationException"),  # awsJson
    ("dynamodb", lambda c: c.get_item(TableName="t", Key={"k": {"S": "v"}}), "UnknownOperationException"),
    ("sns", lambda c: c.list_topics(), "InvalidAction"),  # query protocol, XML
    ("apigateway", lambda c: c.get_rest_apis(), "UnknownOperationException"),  # REST JSON
])
def test_a_service_nimbus_does_not_offer_is_refused_in_its_own_protocol(env, service, call, code):
    """An SDK reads the error's code and the message naming the service (it
    read a bare 404, "An error occurred (404)", or an XML parse error)."""
    server, _ = env
    with pytest.raises(ClientError) as e:
        call(aws_client(server, service))
    error = e.value.response["Error"]
    assert error["Code"] == code, e.value.response
    assert f"does not offer the AWS service '{service}'" in error["Message"], error
