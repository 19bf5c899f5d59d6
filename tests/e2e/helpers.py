"""Shared helpers for the Nimbus end-to-end suite.

Everything here talks to a real `nimbus serve` process over HTTP, either with
boto3 / the aws CLI or with raw SigV4-signed requests built from botocore's
own signer (so the bytes on the wire are what real AWS clients send).

Expected values in the tests come from the AWS Lambda API (see
shared/reference/lambda-api.md) and from what a test itself sent, never from
what the server happens to answer.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

# --------------------------------------------------------------------------
# Constants of the harness contract
# --------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
NIMBUS_BIN = os.environ.get("NIMBUS_BIN") or str(REPO / "target" / "debug" / "nimbus")
REGION = "us-east-1"
ACCOUNT = "123456789012"
ACCESS_KEY = "AKIDNIMBUSTEST000001"
SECRET_KEY = "nImBuS/tEsT+sEcReT/kEy/0123456789abcdefg"  # 40 characters
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lambda-role"
START_TIMEOUT = float(os.environ.get("NIMBUS_E2E_START_TIMEOUT", "10"))
STOP_TIMEOUT = 10.0

# Runtimes this machine has (python3.11, node 20, java 17) plus the provided family.
AVAILABLE_RUNTIMES = ("python3.11", "nodejs20.x", "java17", "provided", "provided.al2", "provided.al2023")

# AWS limits (reference §5).
CODE_REQUEST_MAX = 69_905_067  # request body bytes for operations that carry a base64 zip
UNZIPPED_MAX = 262_144_000  # unzipped function code plus all layers

# HTTP status of each error code (reference §1.1, §7).
ERROR_STATUS = {
    "InvalidParameterValueException": 400,
    "ValidationException": 400,
    "InvalidRequestContentException": 400,
    "SerializationException": 400,
    "IncompleteSignatureException": 400,
    "ResourceNotFoundException": 404,
    "ProvisionedConcurrencyConfigNotFoundException": 404,
    "ResourceConflictException": 409,
    "PreconditionFailedException": 412,
    "RequestEntityTooLargeException": 413,
    "ServiceException": 500,
    "InvalidSignatureException": 403,
    "UnrecognizedClientException": 403,
    "MissingAuthenticationTokenException": 403,
}

# A pattern / length / minimum of the API model broken is a ValidationException
# at AWS's front door (e.g. "1 validation error detected: Value 'x' at
# 'functionName' failed to satisfy constraint"). A value above a *service*
# limit that the (wider) model allows is uncertain in public material: AWS
# answers InvalidParameterValueException or ValidationException. Rows that
# test the latter accept either, still at HTTP 400.
ABOVE_SERVICE_MAX = frozenset({"InvalidParameterValueException", "ValidationException"})
# A JSON value of the wrong type for a modelled member: AWS's deserializer
# answers InvalidRequestContentException ("Could not parse request body into
# json") or SerializationException; public material shows both.
WRONG_JSON_TYPE = frozenset({"InvalidRequestContentException", "SerializationException"})

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# FunctionConfiguration.LastModified, e.g. 2020-04-10T19:06:32.563+0000 (reference §1.0).
LAST_MODIFIED_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")
FIXED_DATE = (2020, 1, 1, 0, 0, 0)


def function_arn(name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def layer_arn(name: str, version: int | None = None) -> str:
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}"
    return f"{arn}:{version}" if version is not None else arn


def unique_name(prefix: str = "e2e") -> str:
    """A function/layer/alias name no other test uses (letters, digits, '-')."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def b64sha256(data: bytes) -> str:
    """CodeSha256 as Lambda reports it: base64 of the SHA-256 of the zip bytes."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def strip_meta(resp: dict) -> dict:
    """A boto3 response without its ResponseMetadata."""
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def status_of(resp: dict) -> int:
    return resp["ResponseMetadata"]["HTTPStatusCode"]


# --------------------------------------------------------------------------
# Zip archives
# --------------------------------------------------------------------------


def make_zip(
    files: dict[str, bytes | str],
    symlinks: dict[str, str] | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """A zip with the given regular files and symlinks (name -> target).

    Entry names are written exactly as given (absolute paths and '..' stay),
    timestamps are fixed, so equal input gives equal bytes.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            info.compress_type = compression
            zf.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.create_system = 3
            info.external_attr = 0o120777 << 16
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, target)
    return buf.getvalue()


def code_zip(tag: str | None = None) -> bytes:
    """A small Python function package whose bytes are unique to `tag`."""
    tag = tag or uuid.uuid4().hex
    src = f"# {tag}\ndef handler(event, context):\n    return {{'tag': {tag!r}}}\n"
    return make_zip({"app.py": src})


@functools.lru_cache(maxsize=None)
def zeros_zip(size: int, name: str = "zeros.bin", with_handler: bool = False) -> bytes:
    """A zip holding one file of `size` zero bytes, deflated (tiny on the wire).

    Built in memory in 1 MiB chunks; cached, so each size is built once.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if with_handler:
            info = zipfile.ZipInfo("app.py", date_time=FIXED_DATE)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, "def handler(event, context):\n    return 1\n")
        info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
        info.create_system = 3
        info.external_attr = 0o100644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        chunk = bytes(1 << 20)
        with zf.open(info, "w") as out:
            left = size
            while left:
                n = min(left, len(chunk))
                out.write(chunk if n == len(chunk) else chunk[:n])
                left -= n
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def random_bytes(n: int) -> bytes:
    """Random bytes that are not a zip (fixed for the session)."""
    data = os.urandom(n)
    return b"XX" + data[2:]  # never starts with the 'PK' signature


@functools.lru_cache(maxsize=None)
def truncated_zip() -> bytes:
    whole = make_zip({"app.py": "def handler(e, c):\n    return 1\n" * 50, "lib/util.py": "X = 1\n" * 200})
    return whole[: len(whole) // 2]


@functools.lru_cache(maxsize=None)
def oversized_create_body() -> bytes:
    """A CreateFunction JSON body just over the 69,905,067-byte cap."""
    head = b'{"FunctionName":"too-big","Runtime":"python3.11","Handler":"app.handler","Role":"' + ROLE.encode()
    head += b'","Code":{"ZipFile":"'
    tail = b'"}}'
    pad = CODE_REQUEST_MAX + 4096 - len(head) - len(tail)
    pad -= pad % 4  # keep it valid base64
    return head + b"A" * pad + tail


# --------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------


def fetch(url: str, timeout: float = 30) -> tuple[int, bytes]:
    """GET a plain URL (e.g. a Code.Location); returns (status, body)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def error_type(self) -> str:
        # botocore: cut at the first ':' (AWS may append a URL after it).
        return self.headers.get("x-amzn-errortype", "").split(":", 1)[0]

    def __repr__(self) -> str:  # shown by pytest on failure
        return f"RawResponse({self.status}, {self.headers!r}, {self.body[:500]!r})"


def _at(when: datetime | None):
    """Patch botocore's clock so a signature carries the time `when` (UTC)."""
    if when is None:
        return nullcontext()
    naive = when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when
    return mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: naive)


def sign_headers(
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    service: str = "lambda",
    region: str = REGION,
    when: datetime | None = None,
) -> dict[str, str]:
    """Headers (incl. Authorization, X-Amz-Date) botocore's SigV4 signer adds."""
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    with _at(when):
        SigV4Auth(Credentials(access_key, secret_key), service, region).add_auth(req)
    return dict(req.headers.items())


def presign_url(
    url: str,
    *,
    expires: int = 300,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    region: str = REGION,
    when: datetime | None = None,
) -> str:
    """A query-string (presigned) SigV4 GET URL, as botocore's SigV4QueryAuth makes it."""
    req = AWSRequest(method="GET", url=url)
    with _at(when):
        SigV4QueryAuth(Credentials(access_key, secret_key), "lambda", region, expires=expires).add_auth(req)
    return req.url


def send_raw(
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    expect_continue: bool = False,
    timeout: float = 120,
) -> RawResponse:
    """Send one HTTP/1.1 request over a fresh socket, exactly as given.

    With `expect_continue`, headers go first with `Expect: 100-continue` and
    the body is sent only after `100 Continue` (or after 3 s of silence), so a
    server that rejects a huge upload early is heard instead of resetting the
    connection under a client that is still writing.
    """
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    hdrs = {"Host": parts.netloc}
    hdrs.update(headers or {})
    if body or method in ("POST", "PUT"):
        hdrs["Content-Length"] = str(len(body))
    hdrs["Connection"] = "close"
    if expect_continue:
        hdrs["Expect"] = "100-continue"
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
    try:
        sock.sendall(head.encode("latin-1"))
        send_body = True
        if expect_continue and body:
            ready, _, _ = select.select([sock], [], [], 3.0)
            if ready:
                peek = sock.recv(16, socket.MSG_PEEK)
                send_body = peek.startswith(b"HTTP/1.1 100") or peek.startswith(b"HTTP/1.0 100")
        if send_body and body:
            try:
                view = memoryview(body)
                for off in range(0, len(view), 1 << 20):
                    sock.sendall(view[off : off + (1 << 20)])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early and closed; read what it said
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()  # skips any interim 100 Continue
        data = resp.read()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        sock.close()


def raw_request(
    endpoint: str,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes | str | dict | list = b"",
    headers: dict[str, str] | None = None,
    sign: bool = True,
    expect_continue: bool = False,
    **sign_kw,
) -> RawResponse:
    """A request signed with botocore's SigV4Auth (unless sign=False), sent raw.

    `path` must already be percent-encoded as it goes on the wire. A dict or
    list body is JSON-encoded; bytes/str are sent as they are.
    """
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    url = endpoint.rstrip("/") + path + (f"?{query}" if query else "")
    hdrs = dict(headers or {})
    if body and not any(k.lower() == "content-type" for k in hdrs):
        hdrs["Content-Type"] = "application/json"
    if sign:
        hdrs = sign_headers(method, url, body, hdrs, **sign_kw)
    return send_raw(method, url, body, hdrs, expect_continue=expect_continue)


def assert_raw_error(resp: RawResponse, code: str | frozenset | set, status: int | None = None) -> None:
    """The AWS error response shape (reference §1.0) with the expected code."""
    codes = {code} if isinstance(code, str) else set(code)
    assert resp.error_type in codes, f"expected x-amzn-ErrorType in {sorted(codes)}: {resp!r}"
    want_status = status if status is not None else ERROR_STATUS[resp.error_type]
    assert resp.status == want_status, f"expected HTTP {want_status}: {resp!r}"
    assert resp.headers.get("x-amzn-requestid"), f"no x-amzn-RequestId: {resp!r}"
    try:
        doc = resp.json()
    except ValueError:
        pytest.fail(f"error body is not JSON: {resp!r}")
    assert isinstance(doc, dict), resp
    assert doc.get("Type") == ("User" if resp.status < 500 else "Service"), f"body Type: {resp!r}"
    msg = doc.get("message", doc.get("Message"))
    assert isinstance(msg, str) and msg, f"body has no message/Message: {resp!r}"


@contextmanager
def expect_error(code: str | frozenset | set, status: int | None = None):
    """`with expect_error("ResourceNotFoundException"): lam.get_function(...)`.

    Asserts the botocore error code and the HTTP status the code maps to.
    Yields pytest's ExceptionInfo so the caller can look at the message.
    """
    codes = {code} if isinstance(code, str) else set(code)
    with pytest.raises(ClientError) as info:
        yield info
    err = info.value.response
    got = err.get("Error", {}).get("Code")
    got_status = err.get("ResponseMetadata", {}).get("HTTPStatusCode")
    assert got in codes, f"expected error {sorted(codes)}, got {got} (HTTP {got_status}): {err.get('Error')}"
    want_status = status if status is not None else ERROR_STATUS.get(got)
    assert got_status == want_status, f"{got}: expected HTTP {want_status}, got {got_status}"
    assert err.get("ResponseMetadata", {}).get("RequestId"), "error response has no x-amzn-RequestId"


def error_message(info) -> str:
    return info.value.response["Error"].get("Message", "")


# --------------------------------------------------------------------------
# boto3 clients and common operations
# --------------------------------------------------------------------------


def lambda_client(
    endpoint: str,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    region: str = REGION,
    **config,
):
    cfg = Config(
        retries={"max_attempts": 1},
        connect_timeout=5,
        read_timeout=120,
        **config,
    )
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
    )
    return session.client("lambda", endpoint_url=endpoint, region_name=region, config=cfg)


DROP = object()  # in create_params overrides: leave this key out


def create_params(name: str | None = None, zip_bytes: bytes | None = None, **overrides) -> dict:
    """Valid CreateFunction parameters; overrides win, a value of DROP removes the key."""
    params = {
        "FunctionName": name or unique_name(),
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": zip_bytes if zip_bytes is not None else code_zip()},
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not DROP}


@dataclass
class Fn:
    """A function a test created: its name, ARN, zip and CreateFunction answer."""

    name: str
    zip: bytes
    config: dict
    arn: str = field(init=False)
    sha: str = field(init=False)

    def __post_init__(self):
        self.arn = function_arn(self.name)
        self.sha = b64sha256(self.zip)


def deploy(lam, name: str | None = None, zip_bytes: bytes | None = None, **overrides) -> Fn:
    name = name or unique_name()
    zip_bytes = zip_bytes if zip_bytes is not None else code_zip(name)
    resp = lam.create_function(**create_params(name, zip_bytes, **overrides))
    return Fn(name, zip_bytes, strip_meta(resp))


def publish_layer(lam, name: str | None = None, zip_bytes: bytes | None = None, **kw) -> dict:
    name = name or unique_name("layer")
    zip_bytes = zip_bytes if zip_bytes is not None else make_zip({"python/lib_" + name.replace("-", "_") + ".py": f"N = {name!r}\n"})
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": zip_bytes}, **kw)


def list_all(lam, op: str, key: str, **kw) -> list:
    out = []
    for page in lam.get_paginator(op).paginate(**kw):
        out.extend(page[key])
    return out


# --------------------------------------------------------------------------
# Stored state, for "leaves no trace" checks
# --------------------------------------------------------------------------


def blob_files(data_dir: Path) -> dict[str, int]:
    """Regular files under <data_dir>/blobs (relative path -> size); {} if absent."""
    root = Path(data_dir) / "blobs"
    if not root.is_dir():
        return {}
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def stored_state(lam, data_dir: Path) -> dict:
    fns = list_all(lam, "list_functions", "Functions", FunctionVersion="ALL")
    layers = list_all(lam, "list_layers", "Layers")
    return {
        "functions": sorted(fns, key=lambda f: (f["FunctionArn"], f.get("Version", ""))),
        "layers": sorted(layers, key=lambda layer: layer["LayerArn"]),
        "usage": lam.get_account_settings()["AccountUsage"],
        "blobs": blob_files(data_dir),
    }


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------


class ServerStartError(Exception):
    pass


EXPORT_RE = {
    "AWS_ACCESS_KEY_ID": re.compile(r"export\s+AWS_ACCESS_KEY_ID=['\"]?([A-Za-z0-9]+)['\"]?"),
    "AWS_SECRET_ACCESS_KEY": re.compile(r"export\s+AWS_SECRET_ACCESS_KEY=['\"]?([A-Za-z0-9/+=]+)['\"]?"),
}


def exported_keys(text: str) -> tuple[str, str] | None:
    """(access key, secret) from `export AWS_...=` lines in a log, if both are there."""
    ak = EXPORT_RE["AWS_ACCESS_KEY_ID"].search(text)
    sk = EXPORT_RE["AWS_SECRET_ACCESS_KEY"].search(text)
    return (ak.group(1), sk.group(1)) if ak and sk else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env() -> dict[str, str]:
    """The environment minus anything AWS_* or NIMBUS_* a developer may have set."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NIMBUS_"))}


class NimbusServer:
    """One `nimbus serve` process on a data dir; can be killed and restarted."""

    def __init__(
        self,
        base_dir: Path,
        *,
        name: str = "nimbus",
        with_credentials: bool = True,
        data_dir: Path | None = None,
        known_keys: tuple[str, str] | None = None,
    ):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.with_credentials = with_credentials
        self.data_dir = Path(data_dir) if data_dir else self.base_dir / "data"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        if with_credentials:
            self.access_key, self.secret_key = ACCESS_KEY, SECRET_KEY
        elif known_keys:
            self.access_key, self.secret_key = known_keys
        else:
            self.access_key = self.secret_key = None
        self.proc: subprocess.Popen | None = None
        self.log_paths: list[Path] = []

    # -- lifecycle --------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.log_paths[-1]

    def start(self) -> "NimbusServer":
        env = base_env()
        env.update(NIMBUS_REGION=REGION, NIMBUS_ACCOUNT_ID=ACCOUNT)
        if self.with_credentials:
            env.update(NIMBUS_ACCESS_KEY_ID=ACCESS_KEY, NIMBUS_SECRET_ACCESS_KEY=SECRET_KEY)
        log_path = self.base_dir / f"{self.name}-{len(self.log_paths) + 1}.log"
        self.log_paths.append(log_path)
        cmd = [NIMBUS_BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir)]
        with open(log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            except OSError as e:
                raise ServerStartError(
                    f"cannot run {NIMBUS_BIN} ({e}); build it (cargo build) or set NIMBUS_BIN"
                ) from e
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        client = None
        last_error = "no attempt made"
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(
                    f"`nimbus serve` exited with code {rc} before becoming ready\n{self.log_tail()}"
                )
            if self.access_key is None:
                keys = exported_keys(self.log_text())
                if keys:
                    self.access_key, self.secret_key = keys
                else:
                    last_error = "no `export AWS_ACCESS_KEY_ID=...` lines printed yet"
            if self.access_key is not None:
                if client is None:
                    client = self.client(connect_timeout=0.5, read_timeout=2)
                try:
                    client.list_functions(MaxItems=1)
                    return
                except (BotoCoreError, ClientError) as e:
                    last_error = repr(e)
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(
                    f"`nimbus serve` not ready within {START_TIMEOUT:.0f} s (last: {last_error})\n{self.log_tail()}"
                )
            time.sleep(0.02)  # bounded readiness polling

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL (kill -9), then reap."""
        if self.running():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=STOP_TIMEOUT)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM; the exit code, or None if it did not exit within `timeout`."""
        if self.running():
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.wait_exit(timeout)

    def restart(self) -> "NimbusServer":
        """Start again on the same data dir and port (after kill/terminate)."""
        assert not self.running(), "restart() needs the previous process gone"
        return self.start()

    def stop(self) -> None:
        if self.running() and self.terminate() is None:
            self.kill()

    # -- clients and logs -------------------------------------------------

    def client(self, **config):
        return lambda_client(self.endpoint, self.access_key, self.secret_key, **config)

    def raw(self, method: str, path: str, **kw) -> RawResponse:
        kw.setdefault("access_key", self.access_key)
        kw.setdefault("secret_key", self.secret_key)
        if not kw.get("sign", True):
            kw.pop("access_key")
            kw.pop("secret_key")
        return raw_request(self.endpoint, method, path, **kw)

    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") if p.exists() else "" for p in self.log_paths
        )

    def log_tail(self, max_chars: int = 20_000) -> str:
        chunks = []
        for p in self.log_paths:
            text = p.read_text(errors="replace") if p.exists() else "<no log>"
            chunks.append(f"===== {p} =====\n{text[-max_chars:]}")
        return "\n".join(chunks)


# --------------------------------------------------------------------------
# Command-line clients
# --------------------------------------------------------------------------


def aws_cli_path() -> str | None:
    beside = Path(sys.executable).parent / "aws"
    return str(beside) if beside.exists() else shutil.which("aws")


def run_aws(server: NimbusServer, args: list[str], cwd: Path, timeout: float = 120):
    """`aws lambda ARGS --endpoint-url ... --output json`; (rc, parsed json or None, stderr)."""
    exe = aws_cli_path()
    assert exe, "the aws CLI is not installed (pip install -r scripts/requirements-test.txt)"
    env = base_env()
    env.update(
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_PAGER="",
        AWS_CONFIG_FILE=str(cwd / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(cwd / "no-aws-credentials"),
        AWS_RETRY_MODE="standard",
        AWS_MAX_ATTEMPTS="1",
    )
    cmd = [exe, "lambda", *args, "--endpoint-url", server.endpoint, "--output", "json", "--region", REGION]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    out = p.stdout.strip()
    parsed = None
    if out:
        try:
            parsed = json.loads(out)
        except ValueError:
            parsed = None
    return p.returncode, parsed, p.stderr


def run_nimbus_cli(
    server: NimbusServer,
    args: list[str],
    *,
    cwd: Path,
    env_endpoint: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """`$NIMBUS_BIN ARGS` as a client, configured from AWS_* variables."""
    env = base_env()
    env.update(
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_REGION=REGION,
    )
    if env_endpoint:
        env["AWS_ENDPOINT_URL"] = server.endpoint
    return subprocess.run(
        [NIMBUS_BIN, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
