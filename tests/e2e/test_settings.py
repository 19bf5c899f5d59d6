"""Concurrency, provisioned concurrency, tags, policy, URLs, async settings, account."""

import json

import pytest
from botocore.exceptions import ClientError

from conftest import HELLO_ZIP, arn, create, error_code, unique_name


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
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert sorted(c["FunctionArn"] for c in listed) == sorted([arn(name, "1"), arn(name, "live")])
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
