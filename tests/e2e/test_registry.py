"""The built-in OCI registry (`/v2/`), checked the way the distribution
spec's conformance suite checks a registry (its pull, push, content
discovery and content management workflows, written here with `requests`
because the Go suite cannot be fetched), then with real clients: skopeo and
buildah push and pull, and a kill -9 in the middle of a push."""

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading

import requests

from conftest import aws_client, unique_name, wait_for

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def login(server):
    """(user, password) from ECR's GetAuthorizationToken."""
    data = aws_client(server, "ecr").get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    assert user == "AWS"
    return user, password


class Registry:
    """A `requests` session against `/v2/` logged in with Basic auth."""

    def __init__(self, server):
        self.endpoint = server.endpoint
        self.s = requests.Session()
        self.s.auth = login(server)

    def url(self, path):
        """`path` under /v2/, or a Location the registry answered (absolute path)."""
        return self.endpoint + (path if path.startswith("/") else "/v2/" + path)

    def __getattr__(self, method):
        return lambda path, **kw: self.s.request(method.upper(), self.url(path), **kw)


def new_repo(server, prefix="conf", mutability="MUTABLE"):
    name = f"{prefix}/{unique_name('r').lower()}"
    aws_client(server, "ecr").create_repository(repositoryName=name, imageTagMutability=mutability)
    return name


def error(resp):
    return resp.json()["errors"][0]["code"]


def layer(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def push_blob(reg, repo, data):
    d = sha256(data)
    r = reg.post(f"{repo}/blobs/uploads/?digest={d}", data=data)
    assert r.status_code == 201, r.text
    return d


def push_image(reg, repo, tag, content=b"hello", subject=None, artifact_type=None):
    """Pushes a one-layer image; returns (manifest digest, manifest bytes, layer digest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    blob = layer({"hello.txt": content})
    c, l = push_blob(reg, repo, config), push_blob(reg, repo, blob)
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": {"mediaType": OCI_CONFIG, "digest": c, "size": len(config)},
         "layers": [{"mediaType": LAYER_GZIP, "digest": l, "size": len(blob)}]}
    if subject:
        m["subject"] = subject
    if artifact_type:
        m["artifactType"] = artifact_type
    body = json.dumps(m).encode()
    r = reg.put(f"{repo}/manifests/{tag}", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(body)
    assert r.headers["Location"].endswith(f"/v2/{repo}/manifests/{sha256(body)}")
    return sha256(body), body, l


def test_auth_basic_and_the_token_flow(server):
    r = requests.get(server.endpoint + "/v2/")
    assert r.status_code == 401
    assert error(r) == "UNAUTHORIZED"
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer realm="{server.endpoint}/v2/token"')
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    user, password = login(server)
    assert requests.get(server.endpoint + "/v2/", auth=(user, password)).status_code == 200
    assert requests.get(server.endpoint + "/v2/", auth=(user, password + "x")).status_code == 401
    assert requests.get(server.endpoint + "/v2/", auth=("admin", password)).status_code == 401
    repo = new_repo(server)
    r = requests.get(f"{server.endpoint}/v2/{repo}/tags/list")
    assert f'scope="repository:{repo}:pull,push"' in r.headers["WWW-Authenticate"]
    # The distribution token flow: Basic at the realm, then Bearer.
    assert requests.get(server.endpoint + "/v2/token").status_code == 401
    tok = requests.get(server.endpoint + "/v2/token", params={"service": "x", "scope": f"repository:{repo}:pull"},
                       auth=(user, password)).json()
    assert tok["token"] == tok["access_token"]
    bearer = {"Authorization": f"Bearer {tok['token']}"}
    assert requests.get(f"{server.endpoint}/v2/{repo}/tags/list", headers=bearer).status_code == 200
    # The login password is not a bearer token, nor the bearer token a password.
    assert requests.get(server.endpoint + "/v2/", headers={"Authorization": f"Bearer {password}"}).status_code == 401
    assert requests.get(server.endpoint + "/v2/", auth=("AWS", tok["token"])).status_code == 401


def test_pull_and_push_blobs(server):
    reg, repo = Registry(server), new_repo(server)
    # Monolithic: POST then PUT with the body.
    data = os.urandom(3000)
    r = reg.post(f"{repo}/blobs/uploads/")
    assert r.status_code == 202 and r.headers["Location"]
    r = reg.put(r.headers["Location"], params={"digest": sha256(data)}, data=data)
    assert r.status_code == 201
    assert r.headers["Location"].endswith(f"/v2/{repo}/blobs/{sha256(data)}")
    r = reg.head(f"{repo}/blobs/{sha256(data)}")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "3000" and r.headers["Docker-Content-Digest"] == sha256(data)
    assert reg.get(f"{repo}/blobs/{sha256(data)}").content == data
    r = reg.get(f"{repo}/blobs/{sha256(data)}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == "bytes 10-19/3000"
    assert reg.get(f"{repo}/blobs/{sha256(data)}", headers={"Range": "bytes=5000-"}).status_code == 416
    # A Range to ignore (another unit, several ranges, malformed) gets the whole blob (RFC 9110).
    for ignored in ("garbage", "bytes=0-1,5-6", "bytes=9-2"):
        r = reg.get(f"{repo}/blobs/{sha256(data)}", headers={"Range": ignored})
        assert (r.status_code, r.content) == (200, data), ignored
    # Chunked, with status checks and out-of-order and overlapping chunks.
    data = os.urandom(10_000)
    loc = reg.post(f"{repo}/blobs/uploads/").headers["Location"]
    r = reg.patch(loc, data=data[:4000], headers={"Content-Range": "0-3999", "Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == "0-3999"
    loc = r.headers["Location"]
    r = reg.get(loc)
    assert r.status_code == 204 and r.headers["Range"] == "0-3999"
    r = reg.patch(loc, data=data[5000:6000], headers={"Content-Range": "5000-5999"})
    assert r.status_code == 416 and r.headers["Range"] == "0-3999"
    r = reg.patch(loc, data=data[3000:6000], headers={"Content-Range": "3000-5999"})
    assert r.status_code == 416
    # A chunk longer than its Content-Range says: refused, and the Range is what is stored.
    r = reg.patch(loc, data=data[4000:9000], headers={"Content-Range": "4000-4999"})
    assert r.status_code == 416 and r.headers["Range"] == "0-3999", r.headers
    assert reg.get(loc).headers["Range"] == "0-3999"
    r = reg.patch(loc, data=data[4000:9000], headers={"Content-Range": "4000-8999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-8999"
    r = reg.put(loc, params={"digest": sha256(data)}, data=data[9000:], headers={"Content-Range": "9000-9999"})
    assert r.status_code == 201, r.text
    assert reg.get(f"{repo}/blobs/{sha256(data)}").content == data
    # sha512 digests are verified too.
    small = b"sha512 content"
    d512 = "sha512:" + hashlib.sha512(small).hexdigest()
    assert reg.post(f"{repo}/blobs/uploads/?digest={d512}", data=small).status_code == 201
    assert reg.get(f"{repo}/blobs/{d512}").content == small


def test_bad_blob_input(server):
    reg, repo = Registry(server), new_repo(server)
    r = reg.post(f"{repo}/blobs/uploads/?digest={sha256(b'other')}", data=b"content")
    assert r.status_code == 400 and error(r) == "DIGEST_INVALID"
    assert reg.head(f"{repo}/blobs/{sha256(b'other')}").status_code == 404
    assert reg.head(f"{repo}/blobs/{sha256(b'content')}").status_code == 404
    r = reg.post(f"{repo}/blobs/uploads/?digest=sha256:nothex", data=b"x")
    assert r.status_code == 400 and error(r) == "DIGEST_INVALID"
    r = reg.get(f"{repo}/blobs/{sha256(b'never')}")
    assert r.status_code == 404 and error(r) == "BLOB_UNKNOWN"
    assert r.json()["errors"][0]["message"]
    r = reg.get(f"{repo}/blobs/uploads/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404 and error(r) == "BLOB_UPLOAD_UNKNOWN"
    r = reg.get("Bad_Name/tags/list")
    assert r.status_code == 400 and error(r) == "NAME_INVALID"
    # An empty first segment is part of the name, which the grammar refuses: not another spelling of `repo`.
    r = reg.get(f"/v2//{repo}/tags/list")
    assert r.status_code == 400 and error(r) == "NAME_INVALID"
    # ECR refuses pushes to repositories that were never created.
    r = reg.post("never/created/blobs/uploads/")
    assert r.status_code == 404 and error(r) == "NAME_UNKNOWN"
    assert "does not exist in the registry" in r.json()["errors"][0]["message"]


def test_manifests_and_bad_manifests(server):
    reg, repo = Registry(server), new_repo(server)
    digest, body, _ = push_image(reg, repo, "v1")
    for ref in ("v1", digest):
        r = reg.get(f"{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == body
        assert r.headers["Content-Type"] == OCI_MANIFEST and r.headers["Docker-Content-Digest"] == digest
        h = reg.head(f"{repo}/manifests/{ref}")
        assert h.status_code == 200 and h.headers["Content-Length"] == str(len(body))
    r = reg.get(f"{repo}/manifests/nope")
    assert r.status_code == 404 and error(r) == "MANIFEST_UNKNOWN"
    # Accept is negotiated: a list that names the stored format (or */*)
    # gets it as stored; one naming only formats it is not in does not.
    docker = "application/vnd.docker.distribution.manifest.v2+json"
    assert reg.get(f"{repo}/manifests/v1", headers={"Accept": f"{docker}, {OCI_MANIFEST};q=0.9"}).content == body
    assert reg.get(f"{repo}/manifests/v1", headers={"Accept": "*/*"}).content == body
    for method in ("get", "head"):
        r = getattr(reg, method)(f"{repo}/manifests/v1", headers={"Accept": f"{docker}, {OCI_INDEX}"})
        assert r.status_code == 404, (method, r.status_code)
    assert error(reg.get(f"{repo}/manifests/v1", headers={"Accept": docker})) == "MANIFEST_UNKNOWN"

    good = json.loads(body)
    missing = dict(good, layers=[{"mediaType": LAYER_GZIP, "digest": sha256(b"absent"), "size": 6}])
    r = reg.put(f"{repo}/manifests/v2", data=json.dumps(missing), headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error(r) == "MANIFEST_BLOB_UNKNOWN"
    assert r.json()["errors"][0]["detail"] == {"digest": sha256(b"absent")}
    for payload, ctype in [(b"{not json", OCI_MANIFEST), (json.dumps(dict(good, schemaVersion=1)), OCI_MANIFEST),
                           (body, OCI_INDEX), (body, "application/vnd.example.unknown")]:
        r = reg.put(f"{repo}/manifests/bad", data=payload, headers={"Content-Type": ctype})
        assert r.status_code == 400 and error(r) == "MANIFEST_INVALID", (payload, ctype, r.text)
    # A layer of any media type is stored, as the image spec asks: what buildx
    # pushes as a build attestation (an image config and an in-toto layer).
    statement = b'{"_type": "https://in-toto.io/Statement/v1"}'
    attestation = dict(good, layers=[{"mediaType": "application/vnd.in-toto+json",
                                      "digest": push_blob(reg, repo, statement), "size": len(statement)}])
    r = reg.put(f"{repo}/manifests/attestation", data=json.dumps(attestation), headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    # zstd and uncompressed layers are image layers too.
    for media_type in ["application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.v1.tar"]:
        other = dict(good, layers=[dict(good["layers"][0], mediaType=media_type)])
        r = reg.put(f"{repo}/manifests/{media_type.rsplit('.', 1)[1].replace('+', '-')}", data=json.dumps(other),
                    headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
    r = reg.put(f"{repo}/manifests/{sha256(b'not this')}", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error(r) == "DIGEST_INVALID"
    r = reg.put(f"{repo}/manifests/{digest}", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    assert reg.get(f"{repo}/manifests/bad").status_code == 404
    # An index must name manifests the repository holds.
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
         "platform": {"architecture": "amd64", "os": "linux"}}]}
    assert reg.put(f"{repo}/manifests/multi", data=json.dumps(index), headers={"Content-Type": OCI_INDEX}).status_code == 201
    index["manifests"][0]["digest"] = sha256(b"no manifest")
    r = reg.put(f"{repo}/manifests/multi2", data=json.dumps(index), headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 400 and error(r) == "MANIFEST_BLOB_UNKNOWN"


def test_content_discovery(server):
    reg, repo = Registry(server), new_repo(server)
    digest, body, _ = push_image(reg, repo, "a")
    for tag in ["d", "c", "b", "e"]:
        assert reg.put(f"{repo}/manifests/{tag}", data=body, headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    r = reg.get(f"{repo}/tags/list")
    assert r.json() == {"name": repo, "tags": ["a", "b", "c", "d", "e"]}
    r = reg.get(f"{repo}/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["a", "b"]
    assert r.headers["Link"] == f'</v2/{repo}/tags/list?n=2&last=b>; rel="next"'
    r = reg.get(f"{repo}/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c", "d"]
    r = reg.get(f"{repo}/tags/list", params={"n": 2, "last": "d"})
    assert r.json()["tags"] == ["e"] and "Link" not in r.headers
    r = reg.get(f"{repo}/tags/list", params={"n": 0})
    assert r.json()["tags"] == [] and "Link" not in r.headers
    r = reg.get("_catalog", params={"n": 0})
    assert r.json()["repositories"] == [] and "Link" not in r.headers
    names = reg.get("_catalog", params={"n": 1000}).json()["repositories"]
    assert repo in names and names == sorted(names)

    # Referrers: manifests whose subject is the image.
    subject = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)}
    r = reg.get(f"{repo}/referrers/{digest}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    config = b"{}"
    c = push_blob(reg, repo, config)
    sig = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": c, "size": 2},
           "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": c, "size": 2}],
           "subject": subject, "annotations": {"org.example": "yes"}}
    sig_body = json.dumps(sig).encode()
    r = reg.put(f"{repo}/manifests/{sha256(sig_body)}", data=sig_body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers["OCI-Subject"] == digest
    sbom = dict(sig, artifactType="application/vnd.example.sbom")
    sbom_body = json.dumps(sbom).encode()
    assert reg.put(f"{repo}/manifests/{sha256(sbom_body)}", data=sbom_body,
                   headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    r = reg.get(f"{repo}/referrers/{digest}")
    assert r.headers["Content-Type"] == OCI_INDEX
    found = {m["digest"]: m for m in r.json()["manifests"]}
    assert set(found) == {sha256(sig_body), sha256(sbom_body)}
    assert found[sha256(sig_body)]["artifactType"] == "application/vnd.example.sig"
    assert found[sha256(sig_body)]["annotations"] == {"org.example": "yes"}
    r = reg.get(f"{repo}/referrers/{digest}", params={"artifactType": "application/vnd.example.sbom"})
    assert [m["digest"] for m in r.json()["manifests"]] == [sha256(sbom_body)]
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert reg.get(f"{repo}/referrers/sha256:bad").status_code == 400


def test_content_management(server):
    reg, repo, other = Registry(server), new_repo(server), new_repo(server)
    digest, body, layer_digest = push_image(reg, repo, "keep")
    assert reg.put(f"{repo}/manifests/gone", data=body, headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    # Deleting a tag leaves the manifest.
    assert reg.delete(f"{repo}/manifests/gone").status_code == 202
    assert reg.get(f"{repo}/manifests/gone").status_code == 404
    assert reg.get(f"{repo}/manifests/{digest}").status_code == 200
    # Cross-repository mount, and a mount that cannot happen starts an upload.
    r = reg.post(f"{other}/blobs/uploads/", params={"mount": layer_digest, "from": repo})
    assert r.status_code == 201 and r.headers["Location"].endswith(f"/v2/{other}/blobs/{layer_digest}")
    assert reg.head(f"{other}/blobs/{layer_digest}").status_code == 200
    r = reg.post(f"{other}/blobs/uploads/", params={"mount": sha256(b"nowhere"), "from": repo})
    assert r.status_code == 202
    # Cancelling an upload.
    assert reg.delete(r.headers["Location"]).status_code == 204
    assert reg.get(r.headers["Location"]).status_code == 404
    # Deleting the manifest by digest removes it and its tags.
    assert reg.delete(f"{repo}/manifests/{digest}").status_code == 202
    assert reg.get(f"{repo}/manifests/{digest}").status_code == 404
    assert reg.get(f"{repo}/manifests/keep").status_code == 404
    assert reg.delete(f"{repo}/manifests/{digest}").status_code == 404
    # Blob deletion.
    assert reg.delete(f"{other}/blobs/{layer_digest}").status_code == 202
    assert reg.head(f"{other}/blobs/{layer_digest}").status_code == 404
    assert reg.delete(f"{other}/blobs/{layer_digest}").status_code == 404


def test_an_image_an_index_lists_is_not_deleted_before_the_index(server):
    reg, repo = Registry(server), new_repo(server)
    ecr = aws_client(server, "ecr")
    digest, body, _ = push_image(reg, repo, "child")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    assert reg.put(f"{repo}/manifests/multi", data=index, headers={"Content-Type": OCI_INDEX}).status_code == 201
    r = reg.delete(f"{repo}/manifests/{digest}")
    assert r.status_code == 403 and error(r) == "DENIED" and sha256(index) in r.json()["errors"][0]["message"]
    for image_id in ({"imageDigest": digest}, {"imageTag": "child"}):
        out = ecr.batch_delete_image(repositoryName=repo, imageIds=[image_id])
        assert out["imageIds"] == [], out
        assert [f["failureCode"] for f in out["failures"]] == ["ImageReferencedByManifestList"], out
    # Nothing changed: the image keeps its tag, and the index resolves.
    assert reg.get(f"{repo}/manifests/child", headers={"Accept": OCI_MANIFEST}).content == body
    assert reg.get(f"{repo}/manifests/multi", headers={"Accept": OCI_INDEX}).content == index
    # Once the index is gone, so may the image go.
    assert reg.delete(f"{repo}/manifests/{sha256(index)}").status_code == 202
    out = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "child"}])
    assert out["failures"] == [] and out["imageIds"] == [{"imageDigest": digest, "imageTag": "child"}]


def test_names_holding_the_routes_words_are_served(server):
    reg = Registry(server)
    repo = new_repo(server, prefix="x/manifests/y/blobs/uploads/tags/list")
    digest, body, layer_digest = push_image(reg, repo, "v1")
    assert reg.get(f"{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST}).content == body
    assert reg.get(f"{repo}/blobs/{layer_digest}").status_code == 200
    assert reg.get(f"{repo}/tags/list").json() == {"name": repo, "tags": ["v1"]}
    assert reg.get(f"{repo}/referrers/{digest}").json()["manifests"] == []


def oci_layout(tmp_path, tag="v1", content="hello\n"):
    """A one-layer image built with umoci: an OCI layout `dir:tag`."""
    layout, bundle = tmp_path / f"layout-{tag}", tmp_path / f"bundle-{tag}"
    for args in (["init", "--layout", layout], ["new", "--image", f"{layout}:{tag}"],
                 ["unpack", "--image", f"{layout}:{tag}", bundle]):
        subprocess.run(["umoci", *map(str, args)], check=True, capture_output=True)
    (bundle / "rootfs" / "hello.txt").write_text(content)
    for args in (["repack", "--image", f"{layout}:{tag}", bundle],
                 ["config", "--image", f"{layout}:{tag}", "--config.entrypoint", "/hello"]):
        subprocess.run(["umoci", *map(str, args)], check=True, capture_output=True)
    return f"{layout}:{tag}"


def skopeo(*args, check=True):
    r = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def host(server):
    return f"127.0.0.1:{server.port}"


def test_skopeo_copy_and_inspect(server, tmp_path):
    repo = new_repo(server, "skopeo")
    creds = "AWS:" + login(server)[1]
    src = oci_layout(tmp_path)
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{src}", f"docker://{host(server)}/{repo}:v1")
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", creds, f"docker://{host(server)}/{repo}:v1").stdout)
    assert info["RepoTags"] == ["v1"] and info["Architecture"] == "amd64"
    back = tmp_path / "back"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, f"docker://{host(server)}/{repo}:v1", f"oci:{back}:v1")
    index = json.loads((back / "index.json").read_text())
    assert index["manifests"][0]["digest"] == info["Digest"]
    # Docker schema 2, as skopeo converts to it.
    skopeo("copy", "--format", "v2s2", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{src}",
           f"docker://{host(server)}/{repo}:docker")
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds,
                            f"docker://{host(server)}/{repo}:docker").stdout)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert raw["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    # A repository must be created before it is pushed to, as on ECR.
    r = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{src}",
               f"docker://{host(server)}/never/created:v1", check=False)
    assert r.returncode != 0 and "name unknown" in r.stderr and "does not exist in the registry" in r.stderr
    # Anonymous pulls are refused.
    r = skopeo("inspect", "--tls-verify=false", "--no-creds", f"docker://{host(server)}/{repo}:v1", check=False)
    assert r.returncode != 0 and "unauthorized" in r.stderr.lower()


def test_buildah_push_and_pull(server, tmp_path):
    repo = new_repo(server, "buildah")
    password = login(server)[1]
    b = ["buildah", "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run"), "--storage-driver", "vfs"]
    env = dict(os.environ, REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"), BUILDAH_ISOLATION="chroot")
    (tmp_path / "auth.json").write_text('{"auths": {}}')

    def run(*args, **kw):
        r = subprocess.run([*b, *args], capture_output=True, text=True, env=env, timeout=120, **kw)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    container = run("from", "scratch")
    (tmp_path / "app.txt").write_text("from buildah\n")
    run("copy", container, str(tmp_path / "app.txt"), "/app.txt")
    run("config", "--entrypoint", '["/app"]', container)
    run("commit", "-q", container, "localhost/app:v1")
    run("login", "--tls-verify=false", "-u", "AWS", "--password-stdin", host(server), input=password)
    run("push", "--tls-verify=false", "localhost/app:v1", f"docker://{host(server)}/{repo}:v1")
    run("rmi", "-a", "-f")
    image = run("pull", "-q", "--tls-verify=false", f"docker://{host(server)}/{repo}:v1")
    assert image
    config = json.loads(run("inspect", "--type", "image", image))
    assert config["OCIv1"]["config"]["Entrypoint"] == ["/app"]


def test_kill_mid_push_leaves_a_consistent_registry(private_server):
    s = private_server()
    reg, repo = Registry(s), new_repo(s, "crash")
    committed = push_blob(reg, repo, b"committed before the crash")
    # The first part is more than the server gathers before a write (8 MiB).
    data, first = os.urandom(12 << 20), 9 << 20
    loc = reg.post(f"{repo}/blobs/uploads/").headers["Location"]
    started, release = threading.Event(), threading.Event()

    def slow_body():
        yield data[:first]
        started.set()
        release.wait(30)  # The server is killed while this request is still streaming.
        yield data[first:]

    def push():
        try:
            reg.put(loc, params={"digest": sha256(data)}, data=slow_body())
        except requests.RequestException:
            pass

    t = threading.Thread(target=push, daemon=True)
    t.start()
    assert started.wait(10)
    uploads = s.data_dir / "registry" / "uploads"
    wait_for(lambda: any(p.stat().st_size > 0 for p in uploads.iterdir()), "the upload to reach the disk")
    s.kill()
    release.set()
    s.start()
    assert list(uploads.iterdir()) == []
    reg = Registry(s)
    assert reg.head(f"{repo}/blobs/{sha256(data)}").status_code == 404
    assert reg.get(loc).status_code == 404
    assert reg.get(f"{repo}/blobs/{committed}").content == b"committed before the crash"
    # The push can simply be done again.
    assert push_blob(reg, repo, data) == sha256(data)
    blobs = s.data_dir / "registry" / "blobs"
    assert sorted(p.name for p in blobs.rglob("*") if p.is_file()) == sorted(
        [committed.split(":")[1], sha256(data).split(":")[1]])
