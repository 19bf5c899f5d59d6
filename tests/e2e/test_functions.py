"""CreateFunction, Get*, Update*, Delete and List, driven with boto3."""

import re
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import (ACCOUNT, HELLO_ZIP, REGION, ROLE, arn, code_sha256, create, error_code, make_zip,
                      unique_name, wait_ready)


def test_create_returns_aws_configuration(lam):
    name = unique_name()
    cfg = create(lam, name, MemorySize=256, Timeout=10, Description="d", Environment={"Variables": {"STAGE": "dev"}},
                 EphemeralStorage={"Size": 1024}, Tags={"team": "a"})
    assert cfg["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert cfg["FunctionArn"] == arn(name)
    assert cfg["CodeSha256"] == code_sha256(HELLO_ZIP)
    assert cfg["CodeSize"] == len(HELLO_ZIP)
    assert (cfg["MemorySize"], cfg["Timeout"], cfg["Description"]) == (256, 10, "d")
    assert cfg["Environment"]["Variables"] == {"STAGE": "dev"}
    assert cfg["EphemeralStorage"]["Size"] == 1024
    # As AWS: the create is answered before the code is ready.
    assert (cfg["State"], cfg["StateReasonCode"], cfg["Version"]) == ("Pending", "Creating", "$LATEST")
    assert cfg["StateReason"] == "The function is being created." and "LastUpdateStatus" not in cfg
    assert cfg["PackageType"] == "Zip" and cfg["Architectures"] == ["x86_64"]
    assert re.fullmatch(rf"arn:aws:lambda:{REGION}::runtime:[0-9a-f]{{64}}",
                        cfg["RuntimeVersionConfig"]["RuntimeVersionArn"])
    assert cfg["LastModified"].endswith("+0000")
    assert cfg["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    ready = lam.get_function_configuration(FunctionName=name)
    assert (ready["State"], ready["LastUpdateStatus"]) == ("Active", "Successful")
    # As AWS: becoming Active is a new revision.
    assert "StateReason" not in ready and ready["RevisionId"] != cfg["RevisionId"]
    assert ready["RuntimeVersionConfig"] == cfg["RuntimeVersionConfig"]


def test_defaults_are_aws_defaults(lam):
    cfg = create(lam)
    assert (cfg["MemorySize"], cfg["Timeout"], cfg["EphemeralStorage"]["Size"]) == (128, 3, 512)
    assert cfg["TracingConfig"]["Mode"] == "PassThrough"
    assert cfg["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{cfg['FunctionName']}"}


def test_json_logging_reports_aws_defaults_and_text_drops_the_levels(lam):
    name = create(lam, LoggingConfig={"LogFormat": "JSON"})["FunctionName"]
    group = f"/aws/lambda/{name}"
    assert lam.get_function_configuration(FunctionName=name)["LoggingConfig"] == {
        "LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO", "LogGroup": group}
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    lam.update_function_configuration(FunctionName=name, LoggingConfig={"ApplicationLogLevel": "DEBUG"})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    got = lam.update_function_configuration(FunctionName=name, LoggingConfig={"LogFormat": "Text"})
    assert got["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": group}
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName=name, LoggingConfig={"SystemLogLevel": "WARN"})
    assert e.value.response["Error"]["Message"] == (
        "ApplicationLogLevel and SystemLogLevel can only be set when LogFormat is JSON.")


def test_a_function_without_code_gets_aws_message(lam):
    with pytest.raises(ClientError) as e:
        lam.create_function(FunctionName=unique_name(), Runtime="python3.11", Handler="app.handler", Role=ROLE,
                            Code={})
    assert (error_code(e), e.value.response["Error"]["Message"]) == (
        "InvalidParameterValueException", "Please provide a source for function code.")


def test_duplicate_create_conflicts(lam):
    name = create(lam)["FunctionName"]
    with pytest.raises(ClientError) as e:
        create(lam, name)
    assert error_code(e) == "ResourceConflictException"
    assert e.value.response["Error"]["Message"] == f"Function already exist: {name}"


def test_get_function_by_name_partial_and_full_arn(lam):
    name = create(lam, Tags={"k": "v"})["FunctionName"]
    for ref in (name, f"{ACCOUNT}:function:{name}", arn(name)):
        got = lam.get_function(FunctionName=ref)
        assert got["Configuration"]["FunctionName"] == name
        assert got["Tags"] == {"k": "v"}
        assert got["Code"]["RepositoryType"] == "S3"
    assert "Tags" not in lam.get_function(FunctionName=create(lam)["FunctionName"]), "no tags: no Tags member"


@pytest.mark.parametrize("ref, qualifier, code, message", [
    # A qualifier in the name and a different one in the query.
    ("{name}:1", "2", "InvalidParameterValueException",
     "The derived qualifier from the function name does not match the specified qualifier."),
    # An ARN of another region names a function that is not here; another account's is not ours to read.
    ("arn:aws:lambda:eu-west-1:{acct}:function:{name}", None, "ResourceNotFoundException",
     "Functions from 'eu-west-1' are not reachable in this region ('{region}')"),
    ("arn:aws:lambda:{region}:999999999999:function:{name}", None, "AccessDeniedException", None),
    ("{name}:41", None, "ResourceNotFoundException", "Function not found: {arn}:41"),
    ("{name}:nosuchalias", None, "ResourceNotFoundException", "Function not found: {arn}:nosuchalias"),
])
def test_function_name_and_qualifier_errors(lam, ref, qualifier, code, message):
    name = create(lam)["FunctionName"]
    fill = dict(name=name, acct=ACCOUNT, region=REGION, arn=arn(name))
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    with pytest.raises(ClientError) as e:
        lam.get_function(FunctionName=ref.format(**fill), **kwargs)
    assert error_code(e) == code
    status = {"ResourceNotFoundException": 404, "AccessDeniedException": 403}.get(code, 400)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    if message:
        assert e.value.response["Error"]["Message"] == message.format(**fill)


# Unpacking 100 MB makes the preparation last long enough to be seen; the
# extra file makes each archive (and so each preparation) new.
def slow_zip(tag):
    return make_zip({"app.py": "def handler(e, c):\n    return 1\n", "blob": b"\0" * 100_000_000,
                     "tag.txt": f"{tag}-{unique_name()}"})


PENDING = "The operation cannot be performed at this time. The function is currently in the following state: Pending"


def test_lifecycle_is_observable_and_refuses_what_aws_refuses(server):
    lam = server.client(settle=False)
    name = unique_name("life")
    cfg = create(lam, name, zip_bytes=slow_zip("a"))
    assert cfg["State"] == "Pending"
    # As deploy tools do at once: a permission changes the revision alone, and
    # the function still becomes Active (it stayed Pending for good).
    lam.add_permission(FunctionName=name, StatementId="s3", Action="lambda:InvokeFunction",
                       Principal="s3.amazonaws.com")
    for call in (lambda: lam.invoke(FunctionName=name),
                 lambda: lam.update_function_configuration(FunctionName=name, Timeout=5),
                 lambda: lam.publish_version(FunctionName=name)):
        with pytest.raises(ClientError) as e:
            call()
        assert (error_code(e), e.value.response["Error"]["Message"]) == ("ResourceConflictException", PENDING)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    lam.get_waiter("function_exists").wait(FunctionName=name)
    assert lam.invoke(FunctionName=name)["StatusCode"] == 200

    upd = lam.update_function_code(FunctionName=name, ZipFile=slow_zip("b"))
    assert (upd["State"], upd["LastUpdateStatus"], upd["LastUpdateStatusReasonCode"]) == ("Active", "InProgress", "Creating")
    lam.remove_permission(FunctionName=name, StatementId="s3")
    busy = f"The operation cannot be performed at this time. An update is in progress for resource: {arn(name)}"
    for call in (lambda: lam.update_function_configuration(FunctionName=name, Timeout=5),
                 lambda: lam.update_function_code(FunctionName=name, ZipFile=HELLO_ZIP),
                 lambda: lam.publish_version(FunctionName=name)):
        with pytest.raises(ClientError) as e:
            call()
        assert (error_code(e), e.value.response["Error"]["Message"]) == ("ResourceConflictException", busy)
    assert lam.invoke(FunctionName=name)["StatusCode"] == 200, "an update in progress does not stop invokes"
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    assert lam.get_function(FunctionName=name)["Configuration"]["LastUpdateStatus"] == "Successful"
    assert lam.publish_version(FunctionName=name)["Version"] == "1"


def test_a_kill_while_pending_does_not_leave_the_function_pending(private_server):
    s = private_server()
    lam = s.client(settle=False)
    assert create(lam, "pending", zip_bytes=slow_zip("k"))["State"] == "Pending"
    s.kill()
    again = private_server(s.data_dir)
    assert wait_ready(again.client(settle=False), "pending")["State"] == "Active"


def test_code_location_downloads_the_zip_until_it_expires(lam):
    name = create(lam)["FunctionName"]
    loc = lam.get_function(FunctionName=name)["Code"]["Location"]
    with urllib.request.urlopen(loc) as resp:
        assert resp.read() == HELLO_ZIP
    tampered = loc.replace("X-Amz-Expires=600", "X-Amz-Expires=601")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(tampered)
    assert e.value.code == 403


def test_update_code_and_configuration(lam):
    name = create(lam)["FunctionName"]
    new_zip = make_zip({"app.py": "def handler(e, c):\n    return 2\n"})
    cfg = lam.update_function_code(FunctionName=name, ZipFile=new_zip)
    assert cfg["CodeSha256"] == code_sha256(new_zip)
    cfg2 = lam.update_function_configuration(FunctionName=name, MemorySize=512, Environment={"Variables": {"A1": "x"}})
    assert cfg2["MemorySize"] == 512 and cfg2["CodeSha256"] == code_sha256(new_zip)
    assert cfg2["RevisionId"] != cfg["RevisionId"]
    # Environment replaces the whole map.
    cfg3 = lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"B2": "y"}})
    assert cfg3["Environment"]["Variables"] == {"B2": "y"}
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert lam.get_function_configuration(FunctionName=name)["MemorySize"] == 512


def test_dry_run_update_code_changes_nothing(lam):
    cfg = create(lam)
    new_zip = make_zip({"app.py": "x = 1\n"})
    dry = lam.update_function_code(FunctionName=cfg["FunctionName"], ZipFile=new_zip, DryRun=True)
    assert dry["CodeSha256"] == code_sha256(new_zip)
    assert lam.get_function_configuration(FunctionName=cfg["FunctionName"])["CodeSha256"] == cfg["CodeSha256"]


def test_revision_id_preconditions(lam):
    cfg = create(lam)
    name = cfg["FunctionName"]
    for stale in ("stale", cfg["RevisionId"]):  # the create's revision is stale once the function is Active
        with pytest.raises(ClientError) as e:
            lam.update_function_configuration(FunctionName=name, Timeout=5, RevisionId=stale)
        assert error_code(e) == "PreconditionFailedException"
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName=name, ZipFile=HELLO_ZIP, RevisionId="stale")
    assert error_code(e) == "PreconditionFailedException"
    active = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    ok = lam.update_function_configuration(FunctionName=name, Timeout=5, RevisionId=active)
    assert ok["Timeout"] == 5 and ok["RevisionId"] != active
    assert lam.get_function_configuration(FunctionName=name)["RevisionId"] not in (active, ok["RevisionId"]), \
        "the update's completion is a revision of its own"


def test_delete_function(lam):
    name = create(lam)["FunctionName"]
    resp = lam.delete_function(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        lam.get_function(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException"
    assert e.value.response["Error"]["Message"] == f"Function not found: {arn(name)}"
    with pytest.raises(ClientError) as e:
        lam.delete_function(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException"


def test_list_functions_paginates(private_server):
    lam = private_server().client()
    names = sorted(create(lam, f"list-{i:02d}")["FunctionName"] for i in range(7))
    first = lam.list_functions(MaxItems=3)
    assert len(first["Functions"]) == 3 and "NextMarker" in first
    # As AWS: the state and runtime version fields are GetFunction's only.
    assert not {"State", "LastUpdateStatus", "RuntimeVersionConfig"} & set(first["Functions"][0])
    seen = [f["FunctionName"] for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 3})
            for f in page["Functions"]]
    assert sorted(seen) == names and len(seen) == len(set(seen))
    lam.publish_version(FunctionName=names[0])
    everything = lam.list_functions(FunctionVersion="ALL")["Functions"]
    assert len(everything) == 8
    assert {f["Version"] for f in everything if f["FunctionName"] == names[0]} == {"$LATEST", "1"}
    assert "NextMarker" not in lam.list_functions()


def test_runtime_catalog(lam):
    for runtime in ("python3.11", "nodejs20.x", "provided", "provided.al2", "provided.al2023"):
        assert create(lam, Runtime=runtime)["Runtime"] == runtime
    with pytest.raises(ClientError) as e:
        create(lam, Runtime="ruby3.3")
    assert error_code(e) == "InvalidParameterValueException"
    assert "python3.11" in e.value.response["Error"]["Message"]


def test_vpc_config_is_stored_and_reported(lam):
    vpc = {"SubnetIds": ["subnet-0a1b2c"], "SecurityGroupIds": ["sg-0d1e2f"], "Ipv6AllowedForDualStack": True}
    cfg = create(lam, VpcConfig=vpc)
    assert {k: cfg["VpcConfig"][k] for k in vpc} == vpc
    assert re.fullmatch(r"vpc-[0-9a-f]{17}", cfg["VpcConfig"]["VpcId"])
    off = lam.update_function_configuration(FunctionName=cfg["FunctionName"],
                                            VpcConfig={"SubnetIds": [], "SecurityGroupIds": []})
    assert off["VpcConfig"] == {"SubnetIds": [], "SecurityGroupIds": [], "VpcId": "", "Ipv6AllowedForDualStack": False}
    with pytest.raises(ClientError) as e:
        create(lam, VpcConfig={"SubnetIds": ["subnet-1"], "SecurityGroupIds": []})
    assert error_code(e) == "InvalidParameterValueException"


@pytest.mark.parametrize("setting", [
    {"FileSystemConfigs": [{"Arn": f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:access-point/fsap-0123456789abcdef0",
                            "LocalMountPath": "/mnt/efs"}]},
    {"SnapStart": {"ApplyOn": "PublishedVersions"}},
    {"KMSKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
], ids=["efs", "snapstart", "kms"])
def test_settings_nimbus_cannot_honour_are_refused(lam, setting):
    name = unique_name()
    with pytest.raises(ClientError) as e:
        create(lam, name, **setting)
    assert error_code(e) == "InvalidParameterValueException"
    with pytest.raises(ClientError):
        lam.get_function(FunctionName=name)
    ok = create(lam, name, SnapStart={"ApplyOn": "None"})
    assert ok["SnapStart"] == {"ApplyOn": "None", "OptimizationStatus": "Off"}
    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName=name, **setting)
    assert error_code(e) == "InvalidParameterValueException"
