"""ECR's control API (boto3 `ecr`, the aws CLI) over the built-in registry:
repositories, images, tag immutability, authorization tokens that skopeo
logs in with, garbage collection of deleted images' blobs, and bad input."""

import base64
import datetime
import json
import os
import shutil
import subprocess

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, aws_client, error_code, unique_name
from test_registry import oci_layout, skopeo


@pytest.fixture(scope="module")
def ecr(server):
    return aws_client(server, "ecr")


def repo_name():
    return f"ecr/{unique_name('r').lower()}"


def host(server):
    return f"127.0.0.1:{server.port}"


def password(ecr):
    return base64.b64decode(ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]).decode()[4:]


def push(server, ecr, tmp_path, repo, tag, content="hello\n"):
    src = oci_layout(tmp_path, tag=unique_name("t").lower(), content=content)
    return skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "AWS:" + password(ecr), f"oci:{src}",
                  f"docker://{host(server)}/{repo}:{tag}", check=False)


def registry_blob_files(server):
    root = server.data_dir / "registry" / "blobs"
    return {f"{p.parent.parent.name}:{p.name}" for p in root.rglob("*") if p.is_file()}


def test_repositories(server, ecr):
    name = repo_name()
    repo = ecr.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE",
                                 tags=[{"Key": "team", "Value": "a"}])["repository"]
    assert repo["repositoryArn"] == f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}"
    assert repo["registryId"] == ACCOUNT
    assert repo["repositoryUri"] == f"{ACCOUNT}.dkr.ecr.{REGION}.{host(server)}/{name}"
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert isinstance(repo["createdAt"], datetime.datetime)
    with pytest.raises(ClientError) as e:
        ecr.create_repository(repositoryName=name)
    assert error_code(e) == "RepositoryAlreadyExistsException"
    assert f"The repository with name '{name}' already exists in the registry with id '{ACCOUNT}'" in str(e.value)
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert [r["repositoryName"] for r in described] == [name]
    every = ecr.describe_repositories()["repositories"]
    assert name in [r["repositoryName"] for r in every]
    others = [repo_name() for _ in range(3)]
    for n in others:
        ecr.create_repository(repositoryName=n)
    pages = ecr.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 2})
    listed = [r["repositoryName"] for page in pages for r in page["repositories"]]
    assert set(others) <= set(listed) and len(listed) == len(set(listed))
    out = ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="MUTABLE")
    assert out == {**out, "repositoryName": name, "imageTagMutability": "MUTABLE", "registryId": ACCOUNT}
    assert ecr.delete_repository(repositoryName=name)["repository"]["repositoryName"] == name
    with pytest.raises(ClientError) as e:
        ecr.describe_repositories(repositoryNames=[name])
    assert error_code(e) == "RepositoryNotFoundException"
    assert f"The repository with name '{name}' does not exist in the registry with id '{ACCOUNT}'" in str(e.value)
    with pytest.raises(ClientError) as e:
        ecr.delete_repository(repositoryName=name)
    assert error_code(e) == "RepositoryNotFoundException"


def test_bad_input(server, ecr):
    # botocore checks lengths itself; the server's own checks are what is tested here.
    key, secret = server.credentials()
    raw = boto3.client("ecr", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                       aws_secret_access_key=secret, config=Config(parameter_validation=False,
                                                                    retries={"max_attempts": 1}))
    # ECR words its repository-name rule its own way (as quoted from AWS in
    # public issues), not as the model's ValidationException.
    pattern = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
    for bad, rule in [("UPPER", f"must satisfy regular expression '{pattern}'"),
                      ("a", "must have length greater than or equal to 2"),
                      ("x" * 257, "must have length less than or equal to 256"),
                      ("trailing/", f"must satisfy regular expression '{pattern}'"),
                      ("-lead", f"must satisfy regular expression '{pattern}'")]:
        with pytest.raises(ClientError) as e:
            raw.create_repository(repositoryName=bad)
        assert error_code(e) == "InvalidParameterException", bad
        assert e.value.response["Error"]["Message"] == (
            f"Invalid parameter at 'repositoryName' failed to satisfy constraint: '{rule}'")
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.describe_images(repositoryName="Not-Lower")
    with pytest.raises(ClientError) as e:
        raw.create_repository(repositoryName=repo_name(), imageTagMutability="SOMETIMES")
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        ecr.list_images(repositoryName="never-created")
    assert error_code(e) == "RepositoryNotFoundException"
    with pytest.raises(ClientError) as e:
        ecr.describe_images(repositoryName="never-created")
    assert error_code(e) == "RepositoryNotFoundException"
    with pytest.raises(ClientError) as e:
        raw.batch_delete_image(repositoryName=repo_name(), imageIds=[])
    assert error_code(e) == "ValidationException"


def test_login_password_works_with_skopeo_login(server, ecr, tmp_path):
    data = ecr.get_authorization_token()["authorizationData"][0]
    user, token = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    assert user == "AWS"
    left = data["expiresAt"] - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(hours=11, minutes=55) < left <= datetime.timedelta(hours=12)
    assert data["proxyEndpoint"] == f"http://{ACCOUNT}.dkr.ecr.{REGION}.{host(server)}"
    name = repo_name()
    ecr.create_repository(repositoryName=name)
    # As ECR's documentation has it: aws ecr get-login-password | <tool> login --password-stdin.
    key, secret = server.credentials()
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION=REGION,
               REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"))
    login = subprocess.run(
        f"{shutil.which('aws')} --endpoint-url {server.endpoint} ecr get-login-password"
        f" | skopeo login --tls-verify=false --username AWS --password-stdin {host(server)}",
        shell=True, capture_output=True, text=True, env=env, timeout=60)
    assert login.returncode == 0, login.stderr
    src = oci_layout(tmp_path)
    r = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{src}", f"docker://{host(server)}/{name}:v1"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    ids = ecr.list_images(repositoryName=name)["imageIds"]
    assert [i["imageTag"] for i in ids] == ["v1"]


def test_images_immutability_and_garbage_collection(server, ecr, tmp_path):
    name = repo_name()
    ecr.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")
    assert push(server, ecr, tmp_path, name, "v1", "one\n").returncode == 0
    assert push(server, ecr, tmp_path, name, "v2", "two\n").returncode == 0
    # IMMUTABLE: v1 cannot be moved to another image.
    r = push(server, ecr, tmp_path, name, "v1", "three\n")
    assert r.returncode != 0
    assert "tag invalid" in r.stderr and "cannot be overwritten because the repository is immutable" in r.stderr
    details = {d["imageTags"][0]: d for d in ecr.describe_images(repositoryName=name)["imageDetails"]}
    assert set(details) == {"v1", "v2"}
    v1 = details["v1"]
    assert v1["imageManifestMediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert v1["imageSizeInBytes"] > 0 and v1["registryId"] == ACCOUNT
    one = ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": "v2"}])["imageDetails"]
    assert one[0]["imageDigest"] == details["v2"]["imageDigest"]
    with pytest.raises(ClientError) as e:
        ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": "v9"}])
    assert error_code(e) == "ImageNotFoundException"

    got = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}, {"imageTag": "nope"},
                                                             {"imageDigest": "sha256:bad"}])
    manifest = json.loads(got["images"][0]["imageManifest"])
    assert got["images"][0]["imageId"] == {"imageDigest": v1["imageDigest"], "imageTag": "v1"}
    assert sorted(f["failureCode"] for f in got["failures"]) == ["ImageNotFound", "InvalidImageDigest"]
    layer = manifest["layers"][0]["digest"]
    assert layer in registry_blob_files(server)

    with pytest.raises(ClientError) as e:
        ecr.delete_repository(repositoryName=name)
    assert error_code(e) == "RepositoryNotEmptyException"

    # Another repository holding the same v2 image (copied registry to registry) keeps its blobs.
    copy = repo_name()
    ecr.create_repository(repositoryName=copy)
    creds = "AWS:" + password(ecr)
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--src-creds", creds, "--dest-creds", creds,
           f"docker://{host(server)}/{name}:v2", f"docker://{host(server)}/{copy}:v2")

    # Deleting by tag removes the image once its last tag is gone, and its blobs with it.
    out = ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "v1"}, {"imageTag": "missing"}])
    assert out["imageIds"] == [{"imageDigest": v1["imageDigest"], "imageTag": "v1"}]
    assert out["failures"][0]["failureCode"] == "ImageNotFound"
    assert [i["imageTag"] for i in ecr.list_images(repositoryName=name)["imageIds"]] == ["v2"]
    files = registry_blob_files(server)
    assert layer not in files and v1["imageDigest"] not in files
    assert details["v2"]["imageDigest"] in files

    # A forced repository delete takes the rest.
    v2 = details["v2"]["imageDigest"]
    ecr.delete_repository(repositoryName=name, force=True)
    shared = registry_blob_files(server)
    assert v2 in shared
    back = tmp_path / "from-copy"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, f"docker://{host(server)}/{copy}:v2", f"oci:{back}:v2")
    ecr.delete_repository(repositoryName=copy, force=True)
    assert v2 not in registry_blob_files(server)


def test_untagged_images_and_filters(server, ecr, tmp_path):
    name = repo_name()
    ecr.create_repository(repositoryName=name)
    assert push(server, ecr, tmp_path, name, "old", "a\n").returncode == 0
    assert push(server, ecr, tmp_path, name, "new", "b\n").returncode == 0
    assert push(server, ecr, tmp_path, name, "old", "c\n").returncode == 0  # MUTABLE: the tag moves.
    untagged = ecr.list_images(repositoryName=name, filter={"tagStatus": "UNTAGGED"})["imageIds"]
    assert len(untagged) == 1 and "imageTag" not in untagged[0]
    tagged = ecr.describe_images(repositoryName=name, filter={"tagStatus": "TAGGED"})["imageDetails"]
    assert sorted(t for d in tagged for t in d["imageTags"]) == ["new", "old"]
    out = ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageDigest": untagged[0]["imageDigest"]}])
    assert out["imageIds"] == [{"imageDigest": untagged[0]["imageDigest"]}] and out["failures"] == []
    assert len(ecr.list_images(repositoryName=name)["imageIds"]) == 2


def test_put_image_retags(server, ecr, tmp_path):
    name = repo_name()
    ecr.create_repository(repositoryName=name)
    assert push(server, ecr, tmp_path, name, "v1").returncode == 0
    image = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])["images"][0]
    out = ecr.put_image(repositoryName=name, imageManifest=image["imageManifest"], imageTag="release")["image"]
    assert out["imageId"] == {"imageDigest": image["imageId"]["imageDigest"], "imageTag": "release"}
    assert out["imageManifestMediaType"] == image["imageManifestMediaType"]
    tags = sorted(i["imageTag"] for i in ecr.list_images(repositoryName=name)["imageIds"])
    assert tags == ["release", "v1"]
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName=name, imageManifest=image["imageManifest"], imageTag="release")
    assert error_code(e) == "ImageAlreadyExistsException"
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName=name, imageManifest=image["imageManifest"], imageTag="x",
                      imageDigest="sha256:" + "0" * 64)
    assert error_code(e) == "ImageDigestDoesNotMatchException"
    # A manifest of 1.5 MB (ECR takes up to 4 MiB) is retagged as any other.
    big = json.loads(image["imageManifest"])
    big["annotations"] = {"org.example.padding": "p" * 1_500_000}
    out = ecr.put_image(repositoryName=name, imageManifest=json.dumps(big), imageTag="big")["image"]
    assert out["imageId"]["imageTag"] == "big"
    broken = json.loads(image["imageManifest"])
    broken["layers"][0]["digest"] = "sha256:" + "1" * 64
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName=name, imageManifest=json.dumps(broken), imageTag="broken")
    assert error_code(e) == "LayersNotFoundException"
    # An index naming an image the repository does not hold.
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "2" * 64, "size": 100,
         "platform": {"architecture": "amd64", "os": "linux"}}]}
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName=name, imageManifest=json.dumps(index), imageTag="multi")
    assert error_code(e) == "ReferencedImagesNotFoundException"
