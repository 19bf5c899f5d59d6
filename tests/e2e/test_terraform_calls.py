"""What Terraform's AWS provider calls to create and refresh the resources a
Nimbus user declares, beyond each service's own tests: tags by ARN for
every taggable resource (its tag interceptor lists them after every create
and read, and stops on any error), cluster settings, and emptying a bucket
for `force_destroy`. Terraform itself cannot be installed here; each test
makes the provider's calls with boto3 (STS's GetCallerIdentity, which it
calls first, is in test_auth)."""

import threading

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, ROLE, aws_client, error_code, make_zip, sqs_client, unique_name


def refused(call, code):
    with pytest.raises(ClientError) as e:
        call()
    assert error_code(e) == code, e.value.response
    return e.value.response["Error"]["Message"]


def test_log_group_tags_by_arn_and_by_name(server):
    logs = aws_client(server, "logs")
    name = f"/app/{unique_name('tf')}"
    arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}"
    logs.create_log_group(logGroupName=name, tags={"team": "a", "env": "dev"})
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "a", "env": "dev"}
    logs.tag_resource(resourceArn=arn, tags={"env": "prod", "cost": "7"})
    logs.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"env": "prod", "cost": "7"}
    # DescribeLogGroups' `arn` ends in `:*`, which the model's pattern refuses here (its `logGroupArn` does not).
    refused(lambda: logs.list_tags_for_resource(resourceArn=arn + ":*"), "InvalidParameterException")
    # The older calls by name see the same tags.
    assert logs.list_tags_log_group(logGroupName=name)["tags"] == {"env": "prod", "cost": "7"}
    logs.tag_log_group(logGroupName=name, tags={"owner": "ops"})
    logs.untag_log_group(logGroupName=name, tags=["cost"])
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"env": "prod", "owner": "ops"}

    # Refusals change nothing.
    many = {f"k{i}": "v" for i in range(49)}
    refused(lambda: logs.tag_resource(resourceArn=arn, tags=many), "TooManyTagsException")
    refused(lambda: logs.tag_resource(resourceArn=arn, tags={"aws:reserved": "x"}), "InvalidParameterException")
    assert logs.list_tags_log_group(logGroupName=name)["tags"] == {"env": "prod", "owner": "ops"}
    gone = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/no/such/{unique_name('g')}"
    refused(lambda: logs.list_tags_for_resource(resourceArn=gone), "ResourceNotFoundException")
    refused(lambda: logs.list_tags_for_resource(resourceArn="not-an-arn"), "InvalidParameterException")
    # A create refused for its tags creates no group.
    bad = f"/app/{unique_name('tf')}"
    refused(lambda: logs.create_log_group(logGroupName=bad, tags={"k" * 129: "v"}), "InvalidParameterException")
    assert logs.describe_log_groups(logGroupNamePrefix=bad)["logGroups"] == []


def test_ecr_repository_tags_and_scanning(server):
    ecr = aws_client(server, "ecr")
    name = unique_name("tf").lower()
    repo = ecr.create_repository(repositoryName=name, tags=[{"Key": "team", "Value": "a"}])["repository"]
    arn = repo["repositoryArn"]
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "team", "Value": "a"}]
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "b"}])
    ecr.untag_resource(resourceArn=arn, tagKeys=["env"])
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "team", "Value": "b"}]
    many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    refused(lambda: ecr.tag_resource(resourceArn=arn, tags=many), "TooManyTagsException")
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "team", "Value": "b"}]
    # Terraform changes resources in parallel: tag and setting changes each
    # read and write the repository whole, and none may undo another.
    clients = [aws_client(server, "ecr") for _ in range(16)]
    calls = [threading.Thread(target=lambda c=c, i=i: c.tag_resource(resourceArn=arn, tags=[{"Key": f"p{i}", "Value": "v"}])
                              if i % 2 else c.put_image_scanning_configuration(
                                  repositoryName=name, imageScanningConfiguration={"scanOnPush": i % 4 == 0}))
             for i, c in enumerate(clients)]
    for t in calls:
        t.start()
    for t in calls:
        t.join()
    keys = {t["Key"] for t in ecr.list_tags_for_resource(resourceArn=arn)["tags"]}
    assert keys == {"team"} | {f"p{i}" for i in range(1, 16, 2)}, keys
    missing = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{unique_name('none').lower()}"
    refused(lambda: ecr.list_tags_for_resource(resourceArn=missing), "RepositoryNotFoundException")

    scanned = ecr.put_image_scanning_configuration(repositoryName=name,
                                                   imageScanningConfiguration={"scanOnPush": True})
    assert scanned["imageScanningConfiguration"] == {"scanOnPush": True}
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert described["imageScanningConfiguration"] == {"scanOnPush": True}
    # Encryption at rest with KMS is not offered: refused, not reported as AES256.
    kms = unique_name("kms").lower()
    refused(lambda: ecr.create_repository(repositoryName=kms, encryptionConfiguration={"encryptionType": "KMS"}),
            "InvalidParameterException")
    refused(lambda: ecr.describe_repositories(repositoryNames=[kms]), "RepositoryNotFoundException")


def test_bucket_tags_versioning_and_emptying_for_force_destroy(server):
    s3 = aws_client(server, "s3")
    bucket = unique_name("tf").lower()
    s3.create_bucket(Bucket=bucket)
    refused(lambda: s3.get_bucket_tagging(Bucket=bucket), "NoSuchTagSet")
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "team", "Value": "a"}]})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "team", "Value": "a"}]
    too_many = {"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(51)]}
    refused(lambda: s3.put_bucket_tagging(Bucket=bucket, Tagging=too_many), "InvalidTag")
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "team", "Value": "a"}]
    s3.delete_bucket_tagging(Bucket=bucket)
    refused(lambda: s3.get_bucket_tagging(Bucket=bucket), "NoSuchTagSet")

    # Never versioned: no status, and each object is its one `null` version.
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    keys = [f"dir/{i:02}" for i in range(5)] + ["top"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    refused(lambda: s3.delete_bucket(Bucket=bucket), "BucketNotEmpty")
    # force_destroy: page through the versions and delete each by its version id.
    listed, pages = [], s3.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2})
    for page in pages:
        versions = page.get("Versions", [])
        assert {(v["VersionId"], v["IsLatest"]) for v in versions} == {("null", True)}, versions
        listed += [v["Key"] for v in versions]
        deleted = s3.delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]})
        assert not deleted.get("Errors"), deleted
    assert listed == keys
    s3.delete_bucket(Bucket=bucket)


def test_object_versions_page_as_s3_pages_them(server):
    s3 = aws_client(server, "s3")
    bucket = unique_name("tf").lower()
    s3.create_bucket(Bucket=bucket)
    for k in ["a/", "a/b", "a/c", "a/d/e"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    # A "folder" object named as the prefix is a key: the next page resumes
    # after it, not past every key under it.
    seen, marker = [], None
    while True:
        page = s3.list_object_versions(Bucket=bucket, Prefix="a/", Delimiter="/", MaxKeys=1,
                                       **({"KeyMarker": marker} if marker else {}))
        seen += [v["Key"] for v in page.get("Versions", [])] + [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            break
        marker = page["NextKeyMarker"]
    assert seen == ["a/", "a/b", "a/c", "a/d/"]
    listed = s3.list_objects(Bucket=bucket, Prefix="a/", Delimiter="/", MaxKeys=1, Marker="a/")
    assert [o["Key"] for o in listed["Contents"]] == ["a/b"]
    assert "cannot be specified without a key marker" in refused(
        lambda: s3.list_object_versions(Bucket=bucket, VersionIdMarker="null"), "InvalidArgument")


def test_event_source_mapping_tags(server):
    lam, sqs = server.client(), sqs_client(server)
    name = unique_name("tf")
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                        Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return None\n"})})
    url = sqs.create_queue(QueueName=unique_name("tfq"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    m = lam.create_event_source_mapping(EventSourceArn=queue_arn, FunctionName=name, Enabled=False,
                                        Tags={"team": "a"})
    arn = m["EventSourceMappingArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "a"}
    lam.tag_resource(Resource=arn, Tags={"env": "prod"})
    lam.untag_resource(Resource=arn, TagKeys=["team"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"env": "prod"}
    # The function's own tags are its own.
    assert lam.list_tags(Resource=lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"])["Tags"] == {}
    assert "aws:" in refused(lambda: lam.create_event_source_mapping(
        EventSourceArn=queue_arn, FunctionName=f"{name}:$LATEST", Tags={"aws:x": "1"}), "InvalidParameterValueException")
    missing = arn[: -len(m["UUID"])] + "00000000-0000-0000-0000-000000000000"
    refused(lambda: lam.list_tags(Resource=missing), "ResourceNotFoundException")
    lam.delete_event_source_mapping(UUID=m["UUID"])


def test_cluster_settings_are_kept_and_updated(server):
    ecs = aws_client(server, "ecs")
    name = unique_name("tf")
    created = ecs.create_cluster(clusterName=name, settings=[{"name": "containerInsights", "value": "enabled"}])
    assert created["cluster"]["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["settings"] == \
        [{"name": "containerInsights", "value": "enabled"}]
    updated = ecs.update_cluster(cluster=name, settings=[{"name": "containerInsights", "value": "disabled"}])
    assert updated["cluster"]["settings"] == [{"name": "containerInsights", "value": "disabled"}]
    ecs.update_cluster_settings(cluster=name, settings=[{"name": "containerInsights", "value": "enhanced"}])
    bad = [{"name": "containerInsights", "value": "sometimes"}]
    refused(lambda: ecs.update_cluster(cluster=name, settings=bad), "InvalidParameterException")
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["settings"] == \
        [{"name": "containerInsights", "value": "enhanced"}]
    refused(lambda: ecs.update_cluster(cluster=unique_name("none"), settings=bad[:0]), "ClusterNotFoundException")
    # What would change what runs and cannot be honoured is refused by name, not ignored.
    other = unique_name("tf")
    assert "capacityProviders" in refused(lambda: ecs.create_cluster(clusterName=other, capacityProviders=["FARGATE"]),
                                          "InvalidParameterException")
    assert ecs.describe_clusters(clusters=[other])["failures"][0]["reason"] == "MISSING"
    for member in ({"enableExecuteCommand": True},
                   {"capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1}]}):
        assert next(iter(member)) in refused(lambda: ecs.create_service(cluster=name, serviceName="web", **member),
                                             "InvalidParameterException")
    assert ecs.list_services(cluster=name)["serviceArns"] == []
    assert "capacityProviders" in refused(lambda: ecs.put_cluster_capacity_providers(
        cluster=name, capacityProviders=["FARGATE"], defaultCapacityProviderStrategy=[]), "InvalidParameterException")
    # Removing them (what a destroy sends) is taken.
    reset = ecs.put_cluster_capacity_providers(cluster=name, capacityProviders=[], defaultCapacityProviderStrategy=[])
    assert reset["cluster"]["clusterName"] == name
    ecs.delete_cluster(cluster=name)


def test_bucket_access_and_versioning_settings_say_what_the_node_does(server):
    """No bucket here can be public, objects have no ACLs and no versions
    are kept: what S3's configurations report of that is served (they are
    among the resources most often declared with a bucket); what would claim
    otherwise is refused."""
    s3 = aws_client(server, "s3")
    bucket = unique_name("tf").lower()
    s3.create_bucket(Bucket=bucket)
    all_blocked = {k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")}
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == all_blocked
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=dict(all_blocked, BlockPublicPolicy=False))
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is False
    s3.delete_public_access_block(Bucket=bucket)
    refused(lambda: s3.get_public_access_block(Bucket=bucket), "NoSuchPublicAccessBlockConfiguration")

    enforced = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"] == enforced
    refused(lambda: s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={
        "Rules": [{"ObjectOwnership": "ObjectWriter"}]}), "NotImplemented")
    s3.delete_bucket_ownership_controls(Bucket=bucket)
    refused(lambda: s3.get_bucket_ownership_controls(Bucket=bucket), "OwnershipControlsNotFoundError")
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=enforced)
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"] == enforced

    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    refused(lambda: s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}),
            "NotImplemented")
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    s3.put_object(Bucket=bucket, Key="k", Body=b"1")
    s3.put_object(Bucket=bucket, Key="k", Body=b"2")
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [(v["Key"], v["VersionId"], v["Size"]) for v in versions] == [("k", "null", 1)]
    # The one version is `null`; naming another never reaches the object (a
    # delete of an old version removed the current one).
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"2"
    other = "3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY"
    refused(lambda: s3.delete_object(Bucket=bucket, Key="k", VersionId=other), "InvalidArgument")
    refused(lambda: s3.get_object(Bucket=bucket, Key="k", VersionId=other), "InvalidArgument")
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": other}]})
    assert [e["Code"] for e in out["Errors"]] == ["InvalidArgument"] and not out.get("Deleted")
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == 1
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k", "VersionId": "null"})
    s3.delete_object(Bucket=bucket, Key="k", VersionId="null")
    refused(lambda: s3.head_object(Bucket=bucket, Key="k"), "404")
