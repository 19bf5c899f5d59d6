"""Layer versions, their permissions, and functions that use them."""

import json

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, code_sha256, create, error_code, make_zip, unique_name

LAYER_ZIP = make_zip({"python/shared.py": "VALUE = 42\n"})


def layer_arn(name, version=None):
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}"
    return f"{base}:{version}" if version else base


def test_publish_get_list_delete(lam):
    name = unique_name("layer")
    v1 = lam.publish_layer_version(LayerName=name, Content={"ZipFile": LAYER_ZIP}, CompatibleRuntimes=["python3.11"],
                                   Description="shared", LicenseInfo="MIT")
    assert v1["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert (v1["Version"], v1["LayerArn"], v1["LayerVersionArn"]) == (1, layer_arn(name), layer_arn(name, 1))
    assert v1["Content"]["CodeSha256"] == code_sha256(LAYER_ZIP)
    assert v1["Content"]["CodeSize"] == len(LAYER_ZIP)
    v2 = lam.publish_layer_version(LayerName=name, Content={"ZipFile": LAYER_ZIP}, CompatibleRuntimes=["nodejs20.x"])
    assert v2["Version"] == 2
    assert lam.get_layer_version(LayerName=name, VersionNumber=1)["Description"] == "shared"
    assert lam.get_layer_version_by_arn(Arn=layer_arn(name, 2))["CompatibleRuntimes"] == ["nodejs20.x"]
    versions = lam.list_layer_versions(LayerName=name)["LayerVersions"]
    assert [v["Version"] for v in versions] == [2, 1]
    assert [v["Version"] for v in lam.list_layer_versions(LayerName=name, CompatibleRuntime="python3.11")["LayerVersions"]] == [1]
    listed = {x["LayerName"]: x for x in lam.list_layers()["Layers"]}
    assert listed[name]["LatestMatchingVersion"]["Version"] == 2
    by_runtime = {x["LayerName"]: x for x in lam.list_layers(CompatibleRuntime="python3.11")["Layers"]}
    assert by_runtime[name]["LatestMatchingVersion"]["Version"] == 1

    lam.delete_layer_version(LayerName=name, VersionNumber=2)
    with pytest.raises(ClientError) as e:
        lam.get_layer_version(LayerName=name, VersionNumber=2)
    assert error_code(e) == "ResourceNotFoundException"
    assert lam.publish_layer_version(LayerName=name, Content={"ZipFile": LAYER_ZIP})["Version"] == 3, "never reused"


def test_a_prune_loop_deleting_page_by_page_misses_no_version(lam):
    name = unique_name("pruned")
    for _ in range(6):
        lam.publish_layer_version(LayerName=name, Content={"ZipFile": LAYER_ZIP})
    # Deleting what each page shows and following its marker: an offset
    # marker skipped versions 3 and 4 here, as the deletions moved them.
    seen, marker = [], None
    while True:
        page = lam.list_layer_versions(LayerName=name, MaxItems=2, **({"Marker": marker} if marker else {}))
        for v in page["LayerVersions"]:
            seen.append(v["Version"])
            lam.delete_layer_version(LayerName=name, VersionNumber=v["Version"])
        marker = page.get("NextMarker")
        if not marker:
            break
    assert seen == [6, 5, 4, 3, 2, 1]
    assert lam.list_layer_versions(LayerName=name)["LayerVersions"] == []


def test_functions_reference_layers(lam):
    name = unique_name("layer")
    lv = lam.publish_layer_version(LayerName=name, Content={"ZipFile": LAYER_ZIP})["LayerVersionArn"]
    cfg = create(lam, Layers=[lv])
    assert cfg["Layers"] == [{"Arn": lv, "CodeSize": len(LAYER_ZIP)}]
    with pytest.raises(ClientError) as e:
        create(lam, Layers=[layer_arn(name, 99)])
    assert error_code(e) == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        create(lam, Layers=[lv.replace(REGION, "eu-west-1")])
    assert e.value.response["Error"]["Message"] == \
        f"Layers are not in the same region as the function. Layers are expected to be in region {REGION}."
    with pytest.raises(ClientError) as e:
        create(lam, Layers=[lv.replace(ACCOUNT, "210987654321")])
    assert error_code(e) == "AccessDeniedException"
    v2 = lam.publish_layer_version(LayerName=name, Content={"ZipFile": LAYER_ZIP})["LayerVersionArn"]
    with pytest.raises(ClientError) as e:
        create(lam, Layers=[lv, v2])
    assert e.value.response["Error"]["Message"].endswith(f"{lv} and {v2} are versions of the same layer.")
    many = [lam.publish_layer_version(LayerName=unique_name("l"), Content={"ZipFile": LAYER_ZIP})["LayerVersionArn"]
            for _ in range(6)]
    with pytest.raises(ClientError) as e:
        create(lam, Layers=many)
    assert error_code(e) == "InvalidParameterValueException"
    updated = lam.update_function_configuration(FunctionName=cfg["FunctionName"], Layers=many[:5])
    assert [x["Arn"] for x in updated["Layers"]] == many[:5]


def test_unzipped_budget_counts_layers(lam):
    # 140 MB of zeros compresses to ~140 KB: two of them exceed 250 MB together.
    big = make_zip({"blob": b"\0" * 140_000_000})
    lv = lam.publish_layer_version(LayerName=unique_name("big"), Content={"ZipFile": big})["LayerVersionArn"]
    name = unique_name()
    with pytest.raises(ClientError) as e:
        create(lam, name, zip_bytes=big, Layers=[lv])
    assert error_code(e) == "InvalidParameterValueException"
    assert "262144000" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        lam.get_function(FunctionName=name)


def test_layer_version_permissions(lam):
    name = unique_name("layer")
    lam.publish_layer_version(LayerName=name, Content={"ZipFile": LAYER_ZIP})
    with pytest.raises(ClientError) as e:
        lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert (error_code(e), e.value.response["Error"]["Message"]) == \
        ("ResourceNotFoundException", "No policy is associated with the given resource.")
    added = lam.add_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="xaccount",
                                             Action="lambda:GetLayerVersion", Principal="210987654321")
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert json.loads(added["Statement"]) == {
        "Sid": "xaccount", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
        "Action": "lambda:GetLayerVersion", "Resource": layer_arn(name, 1)}
    org = lam.add_layer_version_permission(LayerName=layer_arn(name), VersionNumber=1, StatementId="org",
                                           Action="lambda:GetLayerVersion", Principal="*",
                                           OrganizationId="o-abcdefghij", RevisionId=added["RevisionId"])
    assert json.loads(org["Statement"])["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}}
    policy = lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    doc = json.loads(policy["Policy"])
    assert (doc["Version"], doc["Id"], [s["Sid"] for s in doc["Statement"]]) == ("2012-10-17", "default", ["xaccount", "org"])
    assert policy["RevisionId"] == org["RevisionId"] != added["RevisionId"]

    with pytest.raises(ClientError) as e:
        lam.add_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="org",
                                         Action="lambda:GetLayerVersion", Principal="*")
    assert error_code(e) == "ResourceConflictException"
    with pytest.raises(ClientError) as e:
        lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="org", RevisionId=added["RevisionId"])
    assert error_code(e) == "PreconditionFailedException"
    lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="org")
    with pytest.raises(ClientError) as e:
        lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="org")
    assert (error_code(e), e.value.response["Error"]["Message"]) == \
        ("ResourceNotFoundException", "Statement org is not found in resource policy.")
    with pytest.raises(ClientError) as e:
        lam.add_layer_version_permission(LayerName=name, VersionNumber=7, StatementId="s",
                                         Action="lambda:GetLayerVersion", Principal="*")
    assert e.value.response["Error"]["Message"] == f"Layer version {layer_arn(name, 7)} does not exist."
    with pytest.raises(ClientError) as e:
        lam.add_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="s",
                                         Action="lambda:InvokeFunction", Principal="*")
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        lam.get_layer_version(LayerName=name, VersionNumber=0)
    assert (error_code(e), e.value.response["Error"]["Message"]) == \
        ("InvalidParameterValueException", "Layer Version Cannot be less than 1")
