"""PublishVersion, ListVersionsByFunction, aliases and qualifiers."""

import pytest
from botocore.exceptions import ClientError

from conftest import arn, code_sha256, create, error_code, make_zip


def test_publish_numbers_versions_and_skips_unchanged(lam):
    cfg = create(lam)
    name = cfg["FunctionName"]
    v1 = lam.publish_version(FunctionName=name, Description="first")
    assert v1["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert (v1["Version"], v1["FunctionArn"], v1["Description"]) == ("1", arn(name, "1"), "first")
    assert lam.publish_version(FunctionName=name)["Version"] == "1", "nothing changed: same version"
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]
    assert versions[0]["FunctionArn"] == arn(name, "$LATEST")
    assert versions[1]["MemorySize"] == 128 and versions[2]["MemorySize"] == 256


def test_publish_preconditions(lam):
    cfg = create(lam)
    name = cfg["FunctionName"]
    with pytest.raises(ClientError) as e:
        lam.publish_version(FunctionName=name, CodeSha256=code_sha256(b"other"))
    assert error_code(e) == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        lam.publish_version(FunctionName=name, RevisionId="stale")
    assert error_code(e) == "PreconditionFailedException"
    active = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    ok = lam.publish_version(FunctionName=name, CodeSha256=cfg["CodeSha256"], RevisionId=active)
    assert ok["Version"] == "1"
    # As AWS: publishing changes the revision of $LATEST; the version keeps its own.
    assert lam.get_function_configuration(FunctionName=name)["RevisionId"] not in (active, ok["RevisionId"])
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["RevisionId"] == ok["RevisionId"]


def test_create_with_publish_makes_version_one(lam):
    cfg = create(lam, Publish=True)
    assert (cfg["Version"], cfg["State"]) == ("1", "Pending")
    v1 = lam.get_function_configuration(FunctionName=cfg["FunctionName"], Qualifier="1")
    assert (v1["Version"], v1["State"], v1["LastUpdateStatus"]) == ("1", "Active", "Successful")
    assert lam.get_function_configuration(FunctionName=cfg["FunctionName"])["State"] == "Active"


def test_version_numbers_are_never_reused(lam):
    name = create(lam)["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(ClientError) as e:
        lam.get_function(FunctionName=name, Qualifier="1")
    assert error_code(e) == "ResourceNotFoundException"
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": "y = 1\n"}))
    assert lam.publish_version(FunctionName=name)["Version"] == "2"


def test_latest_cannot_be_deleted_by_qualifier(lam):
    name = create(lam)["FunctionName"]
    with pytest.raises(ClientError) as e:
        lam.delete_function(FunctionName=name, Qualifier="$LATEST")
    assert error_code(e) == "InvalidParameterValueException"


def test_aliases_resolve_and_route(lam):
    name = create(lam)["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Timeout=9)
    lam.publish_version(FunctionName=name)
    a = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1", Description="prod",
                         RoutingConfig={"AdditionalVersionWeights": {"2": 0.25}})
    assert a["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert a["AliasArn"] == arn(name, "live")
    assert a["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.25}
    cfg = lam.get_function_configuration(FunctionName=name, Qualifier="live")
    assert (cfg["Version"], cfg["FunctionArn"], cfg["Timeout"]) == ("1", arn(name, "live"), 3)
    assert lam.get_function(FunctionName=f"{name}:live")["Configuration"]["Version"] == "1"

    with pytest.raises(ClientError) as e:
        lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RevisionId="stale")
    assert error_code(e) == "PreconditionFailedException"
    upd = lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RoutingConfig={"AdditionalVersionWeights": {}},
                           RevisionId=a["RevisionId"])
    assert upd["FunctionVersion"] == "2" and "RoutingConfig" not in upd
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "2"

    lam.create_alias(FunctionName=name, Name="old", FunctionVersion="1")
    assert {x["Name"] for x in lam.list_aliases(FunctionName=name)["Aliases"]} == {"live", "old"}
    assert [x["Name"] for x in lam.list_aliases(FunctionName=name, FunctionVersion="1")["Aliases"]] == ["old"]
    with pytest.raises(ClientError) as e:
        lam.delete_function(FunctionName=name, Qualifier="1")
    assert error_code(e) == "ResourceConflictException", "version 1 is still aliased"
    lam.delete_alias(FunctionName=name, Name="old")
    lam.delete_function(FunctionName=name, Qualifier="1")
    for call in (lambda: lam.get_alias(FunctionName=name, Name="old"), lambda: lam.delete_alias(FunctionName=name, Name="old")):
        with pytest.raises(ClientError) as e:
            call()
        assert (error_code(e), e.value.response["Error"]["Message"]) == \
            ("ResourceNotFoundException", f"Cannot find alias arn: {arn(name, 'old')}")
    with pytest.raises(ClientError) as e:
        lam.delete_function(FunctionName=name, Qualifier="live")
    assert (error_code(e), e.value.response["Error"]["Message"]) == \
        ("InvalidParameterValueException", "Deletion of aliases is not currently supported.")
    with pytest.raises(ClientError) as e:
        lam.delete_function(FunctionName=name, Qualifier="9")
    assert (error_code(e), e.value.response["Error"]["Message"]) == \
        ("ResourceNotFoundException", f"Function not found: {arn(name, '9')}")


@pytest.mark.parametrize("kwargs, code", [
    ({"Name": "dup", "FunctionVersion": "1"}, "ResourceConflictException"),
    ({"Name": "x9", "FunctionVersion": "7"}, "ResourceNotFoundException"),
    ({"Name": "123", "FunctionVersion": "1"}, "ValidationException"),
    # The model bounds a weight to [0.0, 1.0]: AWS's front door refuses it.
    ({"Name": "w", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"1": 1.5}}}, "ValidationException"),
    ({"Name": "w2", "FunctionVersion": "$LATEST", "RoutingConfig": {"AdditionalVersionWeights": {"1": 0.5}}}, "InvalidParameterValueException"),
])
def test_alias_errors(lam, kwargs, code):
    name = create(lam)["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="dup", FunctionVersion="1")
    with pytest.raises(ClientError) as e:
        lam.create_alias(FunctionName=name, **kwargs)
    assert error_code(e) == code


def test_pruning_page_by_page_visits_every_version_and_alias(lam):
    """Markers continue after the last item handed out, so a script that
    deletes what each page lists (a version pruner) misses nothing."""
    name = create(lam)["FunctionName"]
    for i in range(6):
        lam.update_function_configuration(FunctionName=name, Description=f"v{i}")
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        version = lam.publish_version(FunctionName=name, Description=f"v{i}")["Version"]
        lam.create_alias(FunctionName=name, Name=f"a{i}", FunctionVersion=version)
    for page in lam.get_paginator("list_aliases").paginate(FunctionName=name, PaginationConfig={"PageSize": 2}):
        for a in page["Aliases"]:
            lam.delete_alias(FunctionName=name, Name=a["Name"])
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []
    pages = lam.get_paginator("list_versions_by_function").paginate(FunctionName=name,
                                                                    PaginationConfig={"PageSize": 2})
    for page in pages:
        for v in page["Versions"]:
            if v["Version"] != "$LATEST":
                lam.delete_function(FunctionName=name, Qualifier=v["Version"])
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST"]


def test_a_version_has_one_spelling_and_an_empty_environment_is_left_out(lam):
    name = create(lam, Environment={"Variables": {"KEEP_ME": "1"}})["FunctionName"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    lam.publish_version(FunctionName=name)
    with pytest.raises(ClientError):
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="01")
    with pytest.raises(ClientError) as e:
        lam.get_function_configuration(FunctionName=name, Qualifier="01")
    assert error_code(e) == "ResourceNotFoundException"
    # `Environment: {}` changes nothing; `{"Variables": {}}` clears, and is then left out.
    out = lam.update_function_configuration(FunctionName=name, Environment={})
    assert out["Environment"] == {"Variables": {"KEEP_ME": "1"}}
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    out = lam.update_function_configuration(FunctionName=name, Environment={"Variables": {}})
    assert "Environment" not in out
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert "Environment" not in lam.get_function_configuration(FunctionName=name)
