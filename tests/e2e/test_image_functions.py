"""Container-image functions (`PackageType: Image`): images built here
with the recipes of examples/container-images (no image is downloaded),
pushed to Nimbus's registry with skopeo, deployed with boto3 and invoked.

The Python image takes a Debian root from mmdebstrap (about two minutes),
so it is built once per run."""

import base64
import fcntl
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import ROLE, aws_client, unique_name, wait_for
from test_registry import LAYER_GZIP, OCI_CONFIG, OCI_MANIFEST, Registry, login, push_blob, sha256

RECIPES = Path(__file__).resolve().parents[2] / "examples" / "container-images"
# The pip of the venv running the suite downloads awslambdaric's wheel.
PIP = str(Path(sys.executable).parent / "pip")


def run(*args, env=None):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, **(env or {})))
    assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="session")
def layouts(tmp_path_factory):
    """OCI layouts of the from-scratch images: busybox `v1`, the same with
    another GREETING `v2`, and the Rust `lambda_runtime` example `rust`."""
    d = tmp_path_factory.mktemp("images")
    busybox = d / "busybox"
    for tag in ("v1", "v2"):
        run("sh", RECIPES / "build-busybox-image.sh", busybox, tag)
    run("umoci", "config", "--image", f"{busybox}:v2", "--config.env", "GREETING=second")
    rust = d / "rust"
    run("sh", RECIPES / "build-rust-image.sh", os.environ["RUST_HELLO_BIN"], rust, "v1")
    return {"busybox": busybox, "rust": rust}


@pytest.fixture(scope="session")
def python_layout(tmp_path_factory):
    """Built once per run, also for the ECS tests of another xdist worker
    (the workers' temporary directories share a parent)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    layout, built = shared / "python-image" / "python", shared / "python-image" / "built"
    layout.parent.mkdir(exist_ok=True)
    with open(shared / "python-image" / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            run("sh", RECIPES / "build-python-image.sh", layout, "v1", RECIPES / "python-app", env={"PIP": PIP})
            built.touch()
    return layout


def host(server):
    return f"127.0.0.1:{server.port}"


def push(server, layout, tag, repo=None, dest_tag=None):
    """Pushes `layout:tag` with skopeo into `repo` (created if new); returns the image URI."""
    ecr = aws_client(server, "ecr")
    if repo is None:
        repo = unique_name("img").lower()
        ecr.create_repository(repositoryName=repo)
    uri = f"{host(server)}/{repo}:{dest_tag or tag}"
    run("skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", "AWS:" + login(server)[1],
        f"oci:{layout}:{tag}", f"docker://{uri}")
    return uri


def create_image_function(lam, uri, **kw):
    name = unique_name("imgfn")
    lam.create_function(FunctionName=name, Role=ROLE, PackageType="Image", Code={"ImageUri": uri}, **kw)
    return name


def invoke(lam, name, event=None):
    r = lam.invoke(FunctionName=name, Payload=json.dumps(event or {"n": 1}), LogType="Tail")
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, body
    return body


def test_an_image_runs_its_entrypoint_in_its_workdir_as_root_of_its_own_user_namespace(server, lam, layouts):
    uri = push(server, layouts["busybox"], "v1")
    name = create_image_function(lam, uri, Environment={"Variables": {"FROM_FUNCTION": "1"}})
    got = lam.get_function(FunctionName=name)
    code, cfg = got["Code"], got["Configuration"]
    assert code["RepositoryType"] == "ECR" and code["ImageUri"] == uri and "Location" not in code
    repo_host, digest = code["ResolvedImageUri"].split("@")
    assert repo_host == uri.rsplit(":", 1)[0] and digest.startswith("sha256:")
    assert cfg["PackageType"] == "Image" and "Runtime" not in cfg and "Handler" not in cfg
    out = invoke(lam, name, {"hello": "image"})
    assert out["event"] == {"hello": "image"}
    assert (out["args"], out["cwd"], out["greeting"]) == ("default-cmd", "/app", "from-image")
    assert out["exec_env"] == "AWS_Lambda_Image"
    # Root inside (a user namespace: the sandbox's unprivileged user outside),
    # on a read-only root with a private writable /tmp.
    assert (out["uid"], out["root"], out["tmp"]) == ("0", "read-only", "writable")
    # The function's variables win over the image's.
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"GREETING": "mine"}})
    assert invoke(lam, name)["greeting"] == "mine"


def test_the_repository_uri_ecr_reports_deploys_as_it_does_on_aws(server, lam, layouts):
    uri = push(server, layouts["busybox"], "v1")
    repo = uri.split("/", 1)[1].split(":")[0]
    ecr_uri = aws_client(server, "ecr").describe_repositories(repositoryNames=[repo])["repositories"][0]["repositoryUri"]
    assert ".dkr.ecr." in ecr_uri
    name = create_image_function(lam, f"{ecr_uri}:v1")
    code = lam.get_function(FunctionName=name)["Code"]
    assert code["ImageUri"] == f"{ecr_uri}:v1" and code["ResolvedImageUri"].startswith(f"{ecr_uri}@sha256:")
    assert invoke(lam, name)["greeting"] == "from-image"


def test_image_config_overrides_entrypoint_command_and_workdir(server, lam, layouts):
    uri = push(server, layouts["busybox"], "v1")
    overrides = {"EntryPoint": ["/bin/sh", "/runtime.sh", "first"], "Command": ["second", "third"],
                 "WorkingDirectory": "/bin"}
    name = create_image_function(lam, uri, ImageConfig=overrides)
    cfg = lam.get_function_configuration(FunctionName=name)
    assert cfg["ImageConfigResponse"]["ImageConfig"] == overrides
    out = invoke(lam, name)
    assert (out["args"], out["cwd"]) == ("first second third", "/bin")
    lam.update_function_configuration(FunctionName=name, ImageConfig={"Command": ["only"]})
    out = invoke(lam, name)
    assert (out["args"], out["cwd"]) == ("only", "/app")
    # What the image does not have is AWS's init error, naming it, not an exit status.
    for config, error_type in [({"EntryPoint": ["/nonexistent"]}, "Runtime.InvalidEntrypoint"),
                               ({"WorkingDirectory": "/nowhere"}, "Runtime.InvalidWorkingDir"),
                               ({"WorkingDirectory": "relative"}, "Runtime.InvalidWorkingDir")]:
        lam.update_function_configuration(FunctionName=name, ImageConfig=config)
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        r = lam.invoke(FunctionName=name, Payload=b"{}")
        out = json.loads(r["Payload"].read())
        assert r.get("FunctionError") == "Unhandled" and out["errorType"] == error_type, (config, out)


def test_a_tag_is_pinned_at_deploy_and_an_update_moves_to_the_new_digest(server, lam, layouts):
    uri = push(server, layouts["busybox"], "v1")
    repo = uri.split("/", 1)[1].split(":")[0]
    name = create_image_function(lam, uri)
    first = lam.get_function(FunctionName=name)["Code"]["ResolvedImageUri"]
    before = invoke(lam, name)
    assert before["greeting"] == "from-image"
    # The tag moves; the function keeps the digest it was deployed with.
    push(server, layouts["busybox"], "v2", repo=repo, dest_tag="v1")
    assert invoke(lam, name)["env"] == before["env"]
    assert lam.get_function(FunctionName=name)["Code"]["ResolvedImageUri"] == first
    # As on AWS, an image function's CodeSha256 is its manifest digest in hex,
    # which PublishVersion takes back.
    digest = first.split("@sha256:")[1]
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == digest
    assert lam.publish_version(FunctionName=name, CodeSha256=digest)["CodeSha256"] == digest
    lam.update_function_code(FunctionName=name, ImageUri=uri)
    second = lam.get_function(FunctionName=name)["Code"]["ResolvedImageUri"]
    assert second != first
    after = invoke(lam, name)
    # A new environment of the new image: the old one was retired.
    assert after["greeting"] == "second" and after["env"] != before["env"]
    # The package type stays.
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName=name, ZipFile=b"PK")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"


def test_two_functions_on_one_image_share_one_read_only_root(server, lam, layouts):
    uri = push(server, layouts["busybox"], "v1")
    a, b = create_image_function(lam, uri), create_image_function(lam, uri)
    digest = lam.get_function(FunctionName=a)["Code"]["ResolvedImageUri"].split("@sha256:")[1]
    out_a, out_b = invoke(lam, a), invoke(lam, b)
    assert out_a["env"] != out_b["env"] and out_a["root"] == out_b["root"] == "read-only"
    roots = server.data_dir / "images" / "roots"
    assert [p.name for p in roots.iterdir()].count(digest) == 1


def uptime_ticks():
    """The host's clock in the unit of a process's start time in /proc/<pid>/stat."""
    return round(float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK"))


def test_an_image_function_starts_on_a_sandbox_made_before_its_first_invoke(server, lam, layouts):
    name = create_image_function(lam, push(server, layouts["busybox"], "v1"))
    # Active now; the next tick separates "made before" from "made during".
    ticked = uptime_ticks()
    wait_for(lambda: uptime_ticks() > ticked, "the clock to tick")
    before = uptime_ticks()
    assert int(invoke(lam, name)["started"]) < before


def test_an_images_root_goes_with_the_last_function_on_it(server, lam):
    repo = unique_name("gc").lower()
    aws_client(server, "ecr").create_repository(repositoryName=repo)
    push_raw(server, repo, "v1", tar_layer(f"only-{unique_name()}"))
    a, b = (create_image_function(lam, f"{host(server)}/{repo}:v1") for _ in range(2))
    digest = lam.get_function(FunctionName=a)["Code"]["ResolvedImageUri"].split("@sha256:")[1]
    root = server.data_dir / "images" / "roots" / digest
    assert root.is_dir()
    lam.delete_function(FunctionName=a)
    assert root.is_dir(), "the root went while a function still uses it"
    lam.delete_function(FunctionName=b)
    wait_for(lambda: not root.exists(), "the unused image root to be removed")


def test_a_rust_lambda_runtime_binary_image(server, lam, layouts):
    name = create_image_function(lam, push(server, layouts["rust"], "v1"))
    out = invoke(lam, name, {"k": "v"})
    assert out["echo"] == {"k": "v"} and out["function"] == name


def test_a_python_image_with_awslambdaric(server, lam, python_layout):
    uri = push(server, python_layout, "v1")
    # Its templates start the client ahead; the function's settings still
    # reach it: its variables, and a log format the client reads at import.
    name = create_image_function(lam, uri, Environment={"Variables": {"GREETING": "hi"}},
                                 LoggingConfig={"LogFormat": "JSON"}, MemorySize=321)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    # The template runs the image's code ahead (its client, its `site`):
    # within the function's memory and a CPU quota, as the function will.
    groups = server.cgroups()
    memory, cpu = groups[0], groups[min(1, len(groups) - 1)]
    limit_file, quota_file = ("memory.limit_in_bytes", "cpu.cfs_quota_us") if len(groups) > 1 else ("memory.max", "cpu.max")
    templates = [d.name for d in memory.iterdir() if d.is_dir() and (d / limit_file).read_text().strip() == str(321 << 20)]
    assert templates
    quotas = [(cpu / t / quota_file).read_text().split()[0] for t in templates]
    assert not {"-1", "max"} & set(quotas), quotas
    r = lam.invoke(FunctionName=name, Payload=json.dumps({"name": "nimbus"}), LogType="Tail")
    out = json.loads(r["Payload"].read())
    assert out["hello"] == "nimbus" and out["exec_env"] == "AWS_Lambda_Image" and out["greeting"] == "hi"
    assert out["python"].startswith("3.") and len(out["request_id"]) == 36
    logged = [json.loads(line) for line in base64.b64decode(r["LogResult"]).decode().splitlines()
              if line.startswith("{") and "handled" in line]
    assert logged and logged[0]["level"] == "WARNING" and logged[0]["message"] == "handled nimbus", logged
    # Another program on the same image: the template runs what it is given.
    other = create_image_function(lam, uri, ImageConfig={"EntryPoint": ["/usr/bin/python3", "-m", "awslambdaric"],
                                                          "Command": ["app.handler"]})
    assert invoke(lam, other)["greeting"] is None
    shell = create_image_function(lam, uri, ImageConfig={"EntryPoint": ["/bin/sh", "-c",
                                                                        "exec python3 -m awslambdaric \"$0\"", "app.handler"]})
    assert invoke(lam, shell)["hello"] == "world"


def test_images_not_in_the_registry_and_zip_settings_are_refused(server, lam, layouts):
    uri = push(server, layouts["busybox"], "v1")
    cases = [
        ({"Code": {"ImageUri": f"{host(server)}/no-such-repo:v1"}},
         f"Source image {host(server)}/no-such-repo:v1 does not exist. Provide a valid source image."),
        ({"Code": {"ImageUri": uri.rsplit(':', 1)[0] + ":missing"}}, "does not exist"),
        ({"Code": {"ImageUri": uri}, "Runtime": "python3.11", "Handler": "app.handler"}, "not supported"),
        ({"Code": {"ImageUri": uri}, "Architectures": ["arm64"]}, "x86_64"),
        ({"Code": {}}, "Please provide ImageUri"),
        # Its configuration is valid JSON but over the manifest's 4 MiB: not read whole on every pull.
        ({"Code": {"ImageUri": push_config(server, json.dumps({"architecture": "amd64", "os": "linux"}).encode() + b" " * (5 << 20))}},
         "is not valid"),
        ({"Code": {"ImageUri": push_config(server, b"not json")}}, "is not valid"),
    ]
    for params, message in cases:
        with pytest.raises(ClientError) as e:
            lam.create_function(FunctionName=unique_name("bad"), Role=ROLE, PackageType="Image", **params)
        err = e.value.response["Error"]
        assert err["Code"] == "InvalidParameterValueException" and message in err["Message"], (params, err)


def tar_layer(name, kind=tarfile.REGTYPE, linkname=""):
    """A gzip layer of one entry, written raw (a hostile name stays as given);
    `symlink-then-file` puts a link `esc` to `linkname` before the file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        if kind == "symlink-then-file":
            link = tarfile.TarInfo("esc")
            link.type, link.linkname = tarfile.SYMTYPE, linkname
            tar.addfile(link)
            kind = tarfile.REGTYPE
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname if kind == tarfile.LNKTYPE else ""
        data = b"escaped"
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return gzip.compress(buf.getvalue(), mtime=0)


def test_hostile_layers_never_escape_and_leave_nothing(server, lam, tmp_path):
    victim = tmp_path / "outside"
    victim.mkdir()
    layers = [
        tar_layer("../../../../../../../../" + str(victim / "dotdot").lstrip("/")),
        tar_layer("esc/through-link", "symlink-then-file", linkname=str(victim)),
        tar_layer("hard", tarfile.LNKTYPE, linkname="../../../../../../../etc/passwd"),
    ]
    repo = unique_name("hostile").lower()
    aws_client(server, "ecr").create_repository(repositoryName=repo)
    for i, layer in enumerate(layers):
        body = push_raw(server, repo, f"h{i}", layer)
        name = create_image_function(lam, f"{host(server)}/{repo}:h{i}")
        r = lam.invoke(FunctionName=name, Payload=b"{}")
        assert r.get("FunctionError") or r["StatusCode"] >= 500, r
        images = server.data_dir / "images"
        assert not (images / "roots" / sha256(body).split(":")[1]).exists()
        staging = images / "staging"
        assert not staging.exists() or list(staging.iterdir()) == []
    assert list(victim.iterdir()) == []


def push_config(server, config):
    """An image of no layer with `config` as its configuration; its URI."""
    repo = unique_name("config").lower()
    aws_client(server, "ecr").create_repository(repositoryName=repo)
    reg = Registry(server)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                           "config": {"mediaType": OCI_CONFIG, "digest": push_blob(reg, repo, config), "size": len(config)}})
    assert reg.put(f"{repo}/manifests/v1", data=manifest.encode(), headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    return f"{host(server)}/{repo}:v1"


def layer_digests(layout, tag):
    index = json.loads((Path(layout) / "index.json").read_text())
    entry = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag)
    manifest = json.loads((Path(layout) / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())
    return [layer["digest"].split(":")[1] for layer in manifest["layers"]]


def push_raw(server, repo, tag, layer):
    """Pushes a one-layer image over the registry API; returns the manifest body."""
    reg = Registry(server)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/x"]},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": push_blob(reg, repo, config), "size": len(config)},
        "layers": [{"mediaType": LAYER_GZIP, "digest": push_blob(reg, repo, layer), "size": len(layer)}],
    }).encode()
    assert reg.put(f"{repo}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    return manifest


def test_registry_garbage_collection_keeps_what_functions_were_deployed_with(server, lam, layouts):
    ecr = aws_client(server, "ecr")
    blob = lambda digest: server.data_dir / "registry" / "blobs" / "sha256" / digest[7:9] / digest[7:]
    repo = unique_name("gc").lower()
    ecr.create_repository(repositoryName=repo)
    held_layer = tar_layer(f"held-{unique_name()}")
    unheld_layer = tar_layer(f"unheld-{unique_name()}")
    push_raw(server, repo, "held", held_layer)
    push_raw(server, repo, "unheld", unheld_layer)
    create_image_function(lam, f"{host(server)}/{repo}:held")
    ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "held"}, {"imageTag": "unheld"}])
    assert blob(sha256(held_layer)).exists(), "a function's layer was collected"
    assert not blob(sha256(unheld_layer)).exists(), "garbage collection did not run"
