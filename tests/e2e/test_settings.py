"""Concurrency, provisioned concurrency, tags, policy, URLs, async settings, account."""

import json
import re

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, HELLO_ZIP, REGION, arn, create, error_code, unique_name


def test_reserved_concurrency(lam):
    name = create(lam)["FunctionName"]
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    assert lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=10)["ReservedConcurrentExecutions"] == 10
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 10
    assert lam.get_function(FunctionName=name)["Concurrency"]["ReservedConcurrentExecutions"] == 10
    with pytest.raises(ClientError) as e:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=950)
    assert error_code(e) == "InvalidParameterValueException", "would leave fewer than 100 unreserved"
    lam.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)


def test_provisioned_concurrency(lam):
    name = create(lam)["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=3)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 3
    got = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert got["RequestedProvisionedConcurrentExecutions"] == 3 and got["Status"] in ("IN_PROGRESS", "READY")
    lam.update_function_configuration(FunctionName=name, Timeout=4)
    lam.publish_version(FunctionName=name)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="2", ProvisionedConcurrentExecutions=1)
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert sorted(c["FunctionArn"] for c in listed) == sorted([arn(name, "2"), arn(name, "live")])
    with pytest.raises(ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1)
    assert error_code(e) == "InvalidParameterValueException"
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    with pytest.raises(ClientError) as e:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert error_code(e) == "ProvisionedConcurrencyConfigNotFoundException"


def test_tags(lam):
    cfg = create(lam, Tags={"a": "1"})
    fn_arn = cfg["FunctionArn"]
    lam.tag_resource(Resource=fn_arn, Tags={"b": "2", "c": "3"})
    assert lam.list_tags(Resource=fn_arn)["Tags"] == {"a": "1", "b": "2", "c": "3"}
    lam.untag_resource(Resource=fn_arn, TagKeys=["a", "c"])
    assert lam.list_tags(Resource=fn_arn)["Tags"] == {"b": "2"}
    assert lam.get_function(FunctionName=cfg["FunctionName"])["Tags"] == {"b": "2"}
    with pytest.raises(ClientError) as e:
        lam.list_tags(Resource=arn(unique_name()))
    assert error_code(e) == "ResourceNotFoundException"


def test_resource_policy(lam):
    name = create(lam)["FunctionName"]
    with pytest.raises(ClientError) as e:
        lam.get_policy(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException"
    resp = lam.add_permission(FunctionName=name, StatementId="s3-invoke", Action="lambda:InvokeFunction",
                              Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::bucket", SourceAccount="123456789012")
    stmt = json.loads(resp["Statement"])
    assert stmt["Sid"] == "s3-invoke" and stmt["Effect"] == "Allow"
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"}
    assert stmt["Resource"] == arn(name)
    assert stmt["Condition"]["ArnLike"]["AWS:SourceArn"] == "arn:aws:s3:::bucket"
    with pytest.raises(ClientError) as e:
        lam.add_permission(FunctionName=name, StatementId="s3-invoke", Action="lambda:InvokeFunction", Principal="*")
    assert error_code(e) == "ResourceConflictException"
    policy = lam.get_policy(FunctionName=name)
    doc = json.loads(policy["Policy"])
    assert doc["Version"] == "2012-10-17" and [s["Sid"] for s in doc["Statement"]] == ["s3-invoke"]
    assert policy["RevisionId"] == lam.get_function_configuration(FunctionName=name)["RevisionId"]
    lam.remove_permission(FunctionName=name, StatementId="s3-invoke")
    with pytest.raises(ClientError) as e:
        lam.remove_permission(FunctionName=name, StatementId="s3-invoke")
    assert error_code(e) == "ResourceNotFoundException"


def test_policy_size_limit(lam):
    name = create(lam)["FunctionName"]
    with pytest.raises(ClientError) as e:
        for i in range(200):
            lam.add_permission(FunctionName=name, StatementId=f"s{i}", Action="lambda:InvokeFunction",
                               Principal="s3.amazonaws.com", SourceArn=f"arn:aws:s3:::{'b' * 60}{i}")
    assert error_code(e) == "PolicyLengthExceededException"


def test_function_url_configs(lam):
    name = create(lam)["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE",
                                         Cors={"AllowOrigins": ["*"], "MaxAge": 60})
    assert url["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert url["FunctionArn"] == arn(name) and url["AuthType"] == "NONE"
    assert url["FunctionUrl"].startswith("http") and url["FunctionUrl"].endswith("/")
    with pytest.raises(ClientError) as e:
        lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert error_code(e) == "ResourceConflictException"
    aliased = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="AWS_IAM")
    assert aliased["FunctionArn"] == arn(name, "live")
    upd = lam.update_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    assert upd["AuthType"] == "AWS_IAM" and upd["Cors"]["MaxAge"] == 60 and upd["FunctionUrl"] == url["FunctionUrl"]
    assert lam.get_function_url_config(FunctionName=name)["AuthType"] == "AWS_IAM"
    assert len(lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]) == 2
    lam.delete_function_url_config(FunctionName=name)
    with pytest.raises(ClientError) as e:
        lam.get_function_url_config(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException"


def test_event_invoke_configs(lam):
    name = create(lam)["FunctionName"]
    dest = "arn:aws:sqs:us-east-1:123456789012:dlq"
    put = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1,
                                               DestinationConfig={"OnFailure": {"Destination": dest}})
    assert put["FunctionArn"] == arn(name, "$LATEST") and put["MaximumRetryAttempts"] == 1
    assert isinstance(put["LastModified"].timestamp(), float)
    merged = lam.update_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=120)
    assert (merged["MaximumRetryAttempts"], merged["MaximumEventAgeInSeconds"]) == (1, 120)
    assert merged["DestinationConfig"]["OnFailure"]["Destination"] == dest
    replaced = lam.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=60)
    assert "MaximumRetryAttempts" not in replaced, "Put replaces the whole configuration"
    assert len(lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]) == 1
    for bad in ({"MaximumRetryAttempts": 3}, {"MaximumEventAgeInSeconds": 30000},
                {"DestinationConfig": {"OnSuccess": {"Destination": "not-an-arn"}}}):
        with pytest.raises(ClientError) as e:
            lam.put_function_event_invoke_config(FunctionName=name, **bad)
        assert error_code(e) in ("InvalidParameterValueException", "ValidationException")
    lam.delete_function_event_invoke_config(FunctionName=name)
    with pytest.raises(ClientError) as e:
        lam.get_function_event_invoke_config(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException"


def test_account_settings_count_real_usage(private_server):
    lam = private_server().client()
    empty = lam.get_account_settings()
    assert empty["AccountUsage"] == {"TotalCodeSize": 0, "FunctionCount": 0}
    assert empty["AccountLimit"]["CodeSizeUnzipped"] == 262144000
    assert empty["AccountLimit"]["UnreservedConcurrentExecutions"] == empty["AccountLimit"]["ConcurrentExecutions"]
    create(lam, "one")
    create(lam, "two")
    lam.publish_version(FunctionName="one")
    lam.put_function_concurrency(FunctionName="two", ReservedConcurrentExecutions=25)
    s = lam.get_account_settings()
    assert s["AccountUsage"] == {"TotalCodeSize": 3 * len(HELLO_ZIP), "FunctionCount": 2}
    assert s["AccountLimit"]["UnreservedConcurrentExecutions"] == s["AccountLimit"]["ConcurrentExecutions"] - 25


def test_concurrency_cross_field_rules(lam):
    name = create(lam)["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    with pytest.raises(ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=4)
    assert error_code(e) == "InvalidParameterValueException"
    assert e.value.response["Error"]["Message"] == \
        "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function"
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2)
    with pytest.raises(ClientError) as e:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    assert error_code(e) == "InvalidParameterValueException"
    assert "should not be lower than function's total provisioned concurrency [2]" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    assert error_code(e) == "ResourceConflictException", "version 1 is provisioned through its alias"
    for call in (lambda: lam.put_function_concurrency(FunctionName=f"{name}:live", ReservedConcurrentExecutions=1),
                 lambda: lam.delete_function_concurrency(FunctionName=arn(name, "1"))):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST")
    assert e.value.response["Error"]["Message"] == "The function resource provided must be an alias or a published version."
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")  # deleting again succeeds, as on AWS
    lam.delete_function_concurrency(FunctionName=name)
    with pytest.raises(ClientError) as e:
        lam.delete_function_concurrency(FunctionName=unique_name())
    assert error_code(e) == "ResourceNotFoundException"


def test_policy_rules_and_missing_statements(lam):
    name = create(lam)["FunctionName"]
    lam.publish_version(FunctionName=name)
    with pytest.raises(ClientError) as e:
        lam.add_permission(FunctionName=name, Qualifier="$LATEST", StatementId="s", Action="lambda:InvokeFunction",
                           Principal="*")
    assert (error_code(e), e.value.response["Error"]["Message"]) == \
        ("InvalidParameterValueException", "We currently do not support adding policies for $LATEST.")
    with pytest.raises(ClientError) as e:
        lam.remove_permission(FunctionName=name, StatementId="none")
    assert (error_code(e), e.value.response["Error"]["Message"]) == \
        ("ResourceNotFoundException", "No policy is associated with the given resource.")
    stmt = json.loads(lam.add_permission(FunctionName=name, Qualifier="1", StatementId="v1", Action="lambda:InvokeFunction",
                                         Principal="123456789012")["Statement"])
    assert stmt["Resource"] == arn(name, "1") and stmt["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    with pytest.raises(ClientError) as e:
        lam.add_permission(FunctionName=name, Qualifier="1", StatementId="v1", Action="lambda:InvokeFunction", Principal="*")
    assert e.value.response["Error"]["Message"].startswith("The statement id (v1) provided already exists.")
    with pytest.raises(ClientError) as e:
        lam.remove_permission(FunctionName=name, Qualifier="1", StatementId="other")
    assert e.value.response["Error"]["Message"] == "Statement other is not found in resource policy."
    with pytest.raises(ClientError) as e:
        lam.get_policy(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException", "the version's policy is not the function's"
    # Principals as AWS classifies them; a grant through function URLs only carries its condition.
    stmt = json.loads(lam.add_permission(FunctionName=name, StatementId="alexa", Action="lambda:InvokeFunction",
                                         Principal="alexa-appkit.amazon.com")["Statement"])
    assert stmt["Principal"] == {"Service": "alexa-appkit.amazon.com"}
    for bad in ("foo", "12345"):
        with pytest.raises(ClientError) as e:
            lam.add_permission(FunctionName=name, StatementId="bad", Action="lambda:InvokeFunction", Principal=bad)
        assert e.value.response["Error"]["Message"] == \
            "The provided principal was invalid. Please check the principal and try again.", bad
    stmt = json.loads(lam.add_permission(FunctionName=name, StatementId="viaurl", Action="lambda:InvokeFunction",
                                         Principal="*", InvokedViaFunctionUrl=True)["Statement"])
    assert stmt["Condition"] == {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}


def test_url_config_and_event_invoke_config_rules(lam):
    name = create(lam)["FunctionName"]
    with pytest.raises(ClientError) as e:
        lam.create_function_url_config(FunctionName=name, Qualifier="$LATEST", AuthType="NONE")
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        lam.put_function_event_invoke_config(FunctionName=name)
    assert e.value.response["Error"]["Message"] == \
        "You must specify at least one of error handling or destination setting."
    with pytest.raises(ClientError) as e:
        lam.put_function_event_invoke_config(FunctionName=name,
                                             DestinationConfig={"OnFailure": {"Destination": arn(name)}})
    assert e.value.response["Error"]["Message"] == "You can't specify the function as a destination for itself."
    with pytest.raises(ClientError) as e:
        lam.delete_function_event_invoke_config(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        lam.tag_resource(Resource=arn(name, "$LATEST"), Tags={"a": "b"})
    assert error_code(e) == "InvalidParameterValueException"


def test_recursion_config(lam):
    name = create(lam)["FunctionName"]
    assert lam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Terminate"
    assert lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")["RecursiveLoop"] == "Allow"
    assert lam.get_function_recursion_config(FunctionName=arn(name))["RecursiveLoop"] == "Allow"
    with pytest.raises(ClientError) as e:
        lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Sometimes")
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        lam.get_function_recursion_config(FunctionName=unique_name())
    assert error_code(e) == "ResourceNotFoundException"


def test_runtime_management_config(lam):
    cfg = create(lam)
    name = cfg["FunctionName"]
    version_arn = cfg["RuntimeVersionConfig"]["RuntimeVersionArn"]
    got = lam.get_runtime_management_config(FunctionName=name)
    assert (got["UpdateRuntimeOn"], got["FunctionArn"]) == ("Auto", arn(name)) and "RuntimeVersionArn" not in got
    with pytest.raises(ClientError) as e:
        lam.put_runtime_management_config(FunctionName=name, UpdateRuntimeOn="Manual")
    assert error_code(e) == "InvalidParameterValueException", "Manual needs a runtime version"
    with pytest.raises(ClientError) as e:
        lam.put_runtime_management_config(FunctionName=name, UpdateRuntimeOn="Manual",
                                          RuntimeVersionArn="arn:aws:lambda:us-east-1::runtime:" + "0" * 64)
    assert error_code(e) == "InvalidParameterValueException", "not a runtime version of this node"
    put = lam.put_runtime_management_config(FunctionName=name, UpdateRuntimeOn="Manual", RuntimeVersionArn=version_arn)
    assert (put["UpdateRuntimeOn"], put["RuntimeVersionArn"]) == ("Manual", version_arn)
    lam.publish_version(FunctionName=name)
    v1 = lam.get_runtime_management_config(FunctionName=name, Qualifier="1")
    assert (v1["UpdateRuntimeOn"], v1["FunctionArn"]) == ("Manual", arn(name, "1")), "versions keep the setting"
    lam.put_runtime_management_config(FunctionName=name, Qualifier="$LATEST", UpdateRuntimeOn="FunctionUpdate")
    assert lam.get_runtime_management_config(FunctionName=name)["UpdateRuntimeOn"] == "FunctionUpdate"
    assert lam.get_runtime_management_config(FunctionName=name, Qualifier="1")["UpdateRuntimeOn"] == "Manual"


SIGNER = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/nimbus/abcdef0123"


def test_code_signing_configs(private_server):
    lam = private_server().client()
    warn = lam.create_code_signing_config(Description="warn", AllowedPublishers={"SigningProfileVersionArns": [SIGNER]})
    assert warn["ResponseMetadata"]["HTTPStatusCode"] == 201
    csc = warn["CodeSigningConfig"]
    assert re.fullmatch(r"csc-[a-z0-9]{17}", csc["CodeSigningConfigId"])
    assert csc["CodeSigningConfigArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:code-signing-config:{csc['CodeSigningConfigId']}"
    assert csc["CodeSigningPolicies"] == {"UntrustedArtifactOnDeployment": "Warn"}
    assert csc["AllowedPublishers"] == {"SigningProfileVersionArns": [SIGNER]}
    warn_arn = csc["CodeSigningConfigArn"]
    assert lam.get_code_signing_config(CodeSigningConfigArn=warn_arn)["CodeSigningConfig"] == csc
    enforce_arn = lam.create_code_signing_config(
        AllowedPublishers={"SigningProfileVersionArns": [SIGNER]},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"})["CodeSigningConfig"]["CodeSigningConfigArn"]
    assert {c["CodeSigningConfigArn"] for c in lam.list_code_signing_configs()["CodeSigningConfigs"]} == {warn_arn, enforce_arn}

    # Warn: unsigned code is deployed (and a warning logged).
    name = create(lam, CodeSigningConfigArn=warn_arn)["FunctionName"]
    assert lam.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == warn_arn
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=warn_arn)["FunctionArns"] == [arn(name)]
    lam.update_function_code(FunctionName=name, ZipFile=HELLO_ZIP)

    # Enforce: no upload can be verified by a signing profile here, so none is deployed.
    with pytest.raises(ClientError) as e:
        create(lam, CodeSigningConfigArn=enforce_arn)
    assert (error_code(e), e.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("CodeVerificationFailedException", 400)
    put = lam.put_function_code_signing_config(FunctionName=name, CodeSigningConfigArn=enforce_arn)
    assert (put["FunctionName"], put["CodeSigningConfigArn"]) == (name, enforce_arn)
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName=name, ZipFile=HELLO_ZIP)
    assert error_code(e) == "CodeVerificationFailedException"
    with pytest.raises(ClientError) as e:
        lam.delete_code_signing_config(CodeSigningConfigArn=enforce_arn)
    assert error_code(e) == "ResourceConflictException", "still attached"
    lam.delete_function_code_signing_config(FunctionName=name)
    assert "CodeSigningConfigArn" not in lam.get_function_code_signing_config(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=HELLO_ZIP)

    upd = lam.update_code_signing_config(CodeSigningConfigArn=enforce_arn, Description="now warn",
                                         CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Warn"})
    assert upd["CodeSigningConfig"]["Description"] == "now warn"
    lam.delete_code_signing_config(CodeSigningConfigArn=enforce_arn)
    missing = f"arn:aws:lambda:{REGION}:{ACCOUNT}:code-signing-config:csc-0000000000000000a"
    with pytest.raises(ClientError) as e:
        lam.get_code_signing_config(CodeSigningConfigArn=enforce_arn)
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        lam.put_function_code_signing_config(FunctionName=name, CodeSigningConfigArn=missing)
    assert (error_code(e), e.value.response["ResponseMetadata"]["HTTPStatusCode"]) == \
        ("CodeSigningConfigNotFoundException", 404)
    with pytest.raises(ClientError) as e:
        create(lam, CodeSigningConfigArn=missing)
    assert error_code(e) == "CodeSigningConfigNotFoundException"
