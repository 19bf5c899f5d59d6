"""examples/image-resize's README, run as written against a real server:
the buckets, the Pillow layer built with pip, the function with the layer,
the permission for S3 and the notification configuration, an upload of a
generated JPEG, and the thumbnail it makes, waited for with the README's
own `aws s3 ls`. Pillow's wheel is downloaded once into the test target
directory; the README's pip command then installs from there."""

import io
import os
import re
import subprocess
from pathlib import Path

import boto3
from PIL import Image

from conftest import BIN, REGION, REPO, TARGET, wait_for
from doc_blocks import code_blocks

README = REPO / "examples" / "image-resize" / "README.md"
WHEELS = TARGET / "example-wheels"


def wheelhouse(pin):
    """A directory holding the layer's wheel, downloaded on the first run only."""
    name, version = pin.split("==")
    if not list(WHEELS.glob(f"{name}-{version}-cp311-cp311-manylinux*_x86_64*.whl")):
        WHEELS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["python3", "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--platform", "manylinux2014_x86_64", "--only-binary=:all:", "--python-version", "3.11",
                        "--implementation", "cp", "--dest", str(WHEELS), pin], check=True, timeout=600)
    return WHEELS


def shell(server, script, cwd, extra=None):
    key, secret = server.credentials()
    env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION,
               AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_PAGER="",
               PATH=f"{Path(BIN).parent}:{os.environ['PATH']}", **(extra or {}))
    env.pop("AWS_PROFILE", None)
    r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"{script}\n{r.stdout}\n{r.stderr}\n{server.output()[-3000:]}"
    return r.stdout


def test_the_readme_makes_a_thumbnail(private_server, tmp_path):
    server = private_server()
    deploy = code_blocks(README, "Deploy")
    upload, listing, logs = code_blocks(README, "Try it")
    (clean_up,) = code_blocks(README, "Clean up")
    pin = re.search(r"pillow==[\d.]+", "".join(deploy)).group(0)
    pip_env = {"PIP_FIND_LINKS": str(wheelhouse(pin)), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (640, 480), (200, 80, 30)).save(photos / "photo.jpg", "JPEG")
    # From the repository root, as the README says; then the upload from
    # the directory holding the photo.
    out = shell(server, "\n".join([*deploy, f"cd {photos}", upload, 'echo "@@bucket $BUCKET"']), REPO, pip_env)
    bucket = re.search(r"^@@bucket (\S+)$", out, re.M).group(1)

    def listed():
        out = shell(server, listing, photos, {"BUCKET": bucket})
        return out if "resized-photo.jpg" in out else None

    line = wait_for(listed, "the thumbnail", timeout=120)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +\d+ resized-photo\.jpg\n", line), line
    assert f"resized s3://{bucket}/photo.jpg" in shell(server, logs, photos)

    key, secret = server.credentials()
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                      aws_secret_access_key=secret)
    got = s3.get_object(Bucket=f"{bucket}-resized", Key="resized-photo.jpg")
    with Image.open(io.BytesIO(got["Body"].read())) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (128, 96))
    assert got["ContentType"] == "image/jpeg"

    shell(server, clean_up, photos, {"BUCKET": bucket})
    assert not [b for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(bucket)]
