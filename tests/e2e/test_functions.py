"""CreateFunction, Get*, Update*, Delete and List, driven with boto3."""

import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, HELLO_ZIP, ROLE, arn, code_sha256, create, error_code, make_zip, unique_name


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
    assert (cfg["State"], cfg["LastUpdateStatus"], cfg["Version"]) == ("Active", "Successful", "$LATEST")
    assert cfg["PackageType"] == "Zip" and cfg["Architectures"] == ["x86_64"]
    assert cfg["LastModified"].endswith("+0000")
    assert cfg["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_defaults_are_aws_defaults(lam):
    cfg = create(lam)
    assert (cfg["MemorySize"], cfg["Timeout"], cfg["EphemeralStorage"]["Size"]) == (128, 3, 512)
    assert cfg["TracingConfig"]["Mode"] == "PassThrough"
    assert cfg["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{cfg['FunctionName']}"}


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
    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName=name, Timeout=5, RevisionId="stale")
    assert error_code(e) == "PreconditionFailedException"
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName=name, ZipFile=HELLO_ZIP, RevisionId="stale")
    assert error_code(e) == "PreconditionFailedException"
    ok = lam.update_function_configuration(FunctionName=name, Timeout=5, RevisionId=cfg["RevisionId"])
    assert ok["Timeout"] == 5


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
    seen = [f["FunctionName"] for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 3})
            for f in page["Functions"]]
    assert sorted(seen) == names and len(seen) == len(set(seen))
    lam.publish_version(FunctionName=names[0])
    everything = lam.list_functions(FunctionVersion="ALL")["Functions"]
    assert len(everything) == 8
    assert {f["Version"] for f in everything if f["FunctionName"] == names[0]} == {"$LATEST", "1"}
    assert "NextMarker" not in lam.list_functions()


def test_s3_code_source_is_refused_clearly(lam):
    with pytest.raises(ClientError) as e:
        lam.create_function(FunctionName=unique_name(), Runtime="python3.11", Handler="a.b", Role=ROLE,
                            Code={"S3Bucket": "my-bucket", "S3Key": "k.zip"})
    assert error_code(e) == "InvalidParameterValueException"
    assert "ZipFile" in e.value.response["Error"]["Message"]


def test_runtime_catalog(lam):
    for runtime in ("python3.11", "nodejs20.x", "provided", "provided.al2", "provided.al2023"):
        assert create(lam, Runtime=runtime)["Runtime"] == runtime
    with pytest.raises(ClientError) as e:
        create(lam, Runtime="ruby3.3")
    assert error_code(e) == "InvalidParameterValueException"
    assert "python3.11" in e.value.response["Error"]["Message"]
