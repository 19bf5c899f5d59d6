"""Harness for the end-to-end suite: real `nimbus serve` processes on free
ports with temporary data directories, driven by boto3, the aws CLI and the
nimbus CLI."""

import base64
import contextlib
import datetime
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from unittest import mock
from pathlib import Path

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
# The Cargo target directory scripts/test built into (a clone may share another's).
TARGET = Path(os.environ.get("NIMBUS_TEST_TARGET", REPO / "target"))
BIN = os.environ.get("NIMBUS_BIN", str(TARGET / "release" / "nimbus"))
ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lambda-role"
# One SDK cache for every server of the suite (and `nimbus bench`'s), so
# boto3 and the SDK for JavaScript are downloaded once: the first server
# installs them, the others find them or wait for it.
os.environ.setdefault("NIMBUS_SDK_DIR", str(TARGET / "test-sdk"))
KEY_ID = "AKIDNIMBUSTEST000001"
SECRET = "nimbus/test/secret/0123456789abcdefghijklm"


def arn(name, qualifier=None):
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


_counter = itertools.count()


def unique_name(prefix="fn"):
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def make_zip(files, symlinks=None, executables=()):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name in executables else 0o644) << 16
            z.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            info.create_system = 3
            z.writestr(info, target)
    return buf.getvalue()


def code_sha256(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


HELLO_ZIP = make_zip({"app.py": "def handler(event, context):\n    return event\n"})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `nimbus serve` process and its data directory."""

    def __init__(self, data_dir, env_keys=True, args=(), new_session=False, pass_fds=(), log="info"):
        self.data_dir = Path(data_dir)
        self.env_keys = env_keys
        # A session and process group of its own, as a server started from
        # a terminal has: what the terminal's Ctrl-C signals (os.killpg).
        self.new_session = new_session
        # Descriptors the server inherits, as from a wrapper script or supervisor.
        self.pass_fds = tuple(pass_fds)
        self.log_filter = log
        # AWS's default account concurrency, rather than one derived from this machine's memory.
        self.args = list(args) if "--max-concurrency" in args else ["--max-concurrency", "1000", *args]
        self.proc = None
        self.port = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, attempts=3):
        """Starts the server; a port taken between choosing and binding it is retried."""
        for attempt in range(attempts):
            try:
                return self._start()
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == attempts - 1:
                    raise

    def _start(self):
        self.port = free_port()
        env = dict(os.environ, NIMBUS_REGION=REGION, NIMBUS_ACCOUNT_ID=ACCOUNT, NIMBUS_LOG=self.log_filter)
        env.pop("NIMBUS_ACCESS_KEY_ID", None)
        env.pop("NIMBUS_SECRET_ACCESS_KEY", None)
        if self.env_keys:
            env.update(NIMBUS_ACCESS_KEY_ID=KEY_ID, NIMBUS_SECRET_ACCESS_KEY=SECRET)
        self.log = open(self.data_dir.parent / f"server-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir), *self.args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=self.new_session,
            pass_fds=self.pass_fds,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nimbus serve exited {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"nimbus serve never became ready:\n{self.output()}")

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_sdk(self, sdk, timeout=600):
        """Waits until the server says a runtime's SDK (`python`, `nodejs`) is
        ready: installed by it or by another server of the suite."""
        def ready():
            plain = re.sub(r"\x1b\[[0-9;]*m", "", self.output())
            return any("SDK ready" in line and f"sdk={sdk}" in line for line in plain.splitlines())

        wait_for(ready, f"the {sdk} SDK", timeout=timeout)

    def credentials(self):
        if self.env_keys:
            return KEY_ID, SECRET
        keys = json.loads((self.data_dir / "credentials.json").read_text())
        return keys["access_key_id"], keys["secret_access_key"]

    def client(self, settle=True):
        """A boto3 Lambda client; with `settle`, it waits out every create
        and update (see `settle_changes`)."""
        key, secret = self.credentials()
        lam = boto3.client(
            "lambda", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=key, aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}, read_timeout=60),
        )
        return settle_changes(lam) if settle else lam

    def kill(self, sig=signal.SIGKILL, unmount=True):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        if sig == signal.SIGKILL and unmount:
            self.remove_leftovers()
        return code

    def cgroups(self):
        """The node's cgroup directories, one per hierarchy, named as the server names them."""
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
        bases = [Path("/sys/fs/cgroup") / c for c in ("memory", "cpu", "pids")]
        return [b / f"nimbus-{digest}" for b in (bases if bases[0].is_dir() else [Path("/sys/fs/cgroup")])]

    def gauge(self, pattern):
        """A gauge of the Prometheus scrape (`pattern`: its name and labels, as a regex), 0 if absent."""
        key, secret = self.credentials()
        auth = base64.b64encode(f"{key}:{secret}".encode()).decode()
        status, _, body = send("GET", self.endpoint + "/_nimbus/metrics", headers={"Authorization": f"Basic {auth}"})
        assert status == 200, body
        m = re.search(rf'^{pattern} ([0-9.]+)', body.decode(), re.M)
        return int(float(m.group(1))) if m else 0

    def busy_environments(self):
        """Environments serving an invoke now."""
        return self.gauge(r'nimbus_environments\{state="busy"\}')

    def requests_in_flight(self):
        """API requests being served now, the scrape's own not counted."""
        return self.gauge("nimbus_requests_in_flight") - 1

    def peak_rss_mb(self):
        """The node process's peak resident memory so far (VmHWM), in MB."""
        return next(int(l.split()[1]) for l in open(f"/proc/{self.proc.pid}/status") if l.startswith("VmHWM")) / 1024

    def remove_leftovers(self):
        """A killed node's mounts and cgroups stay until it starts again on
        the same data directory; tests that never restart it take them down
        themselves (its sandboxes die with it, so the cgroups empty)."""
        points = [point for _, point in mount_table()]
        for p in sorted((p for p in points if p.startswith(str(self.data_dir) + "/")), reverse=True):
            subprocess.run(["umount", "-l", p], check=False)

        def removed():
            for group in (g for g in self.cgroups() if g.exists()):
                try:
                    for env in (d for d in group.iterdir() if d.is_dir()):
                        env.rmdir()
                    group.rmdir()
                except OSError:  # busy: a process of it is still exiting
                    return False
            return True
        wait_for(removed, "a killed node's cgroups to empty", timeout=10)

    def stop(self):
        """Graceful stop (environments are retired), then SIGKILL if it hangs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def aws_client(server, service):
    """A boto3 client of `service` for `server`, with the server's keys and no retries."""
    key, secret = server.credentials()
    return boto3.client(service, endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}, read_timeout=60))


def sqs_client(server):
    return aws_client(server, "sqs")


def impatient_client(server, service):
    """A client that gives up after a second, with no retry."""
    key, secret = server.credentials()
    return boto3.client(service, endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=1))


@contextlib.contextmanager
def store_write_locked(server):
    """Holds the node's store's write lock from outside, so that its commits
    wait (as behind a slow disk) until the block ends."""
    db = sqlite3.connect(str(server.data_dir / "metadata.db"), timeout=30, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("COMMIT")
        db.close()


def wait_ready(lam, function, timeout=60.0):
    """Waits until a function (name or ARN, maybe qualified) is Active with
    its last update Successful; returns its configuration."""
    def ready():
        cfg = lam.get_function_configuration(FunctionName=function)
        assert cfg["State"] != "Failed" and cfg.get("LastUpdateStatus") != "Failed", cfg
        return cfg if (cfg["State"], cfg.get("LastUpdateStatus")) == ("Active", "Successful") else None
    return wait_for(ready, f"{function} to become ready", timeout)


def settle_changes(lam):
    """Makes `lam` wait, after each successful create or update, until the
    function is ready, as careful tools do on AWS with the
    function_active_v2 / function_updated_v2 waiters: Nimbus answers
    `Pending` / `InProgress` first, and refuses invokes of a pending function
    and further changes meanwhile. Tests of that behaviour use a client
    without it (`Server.client(settle=False)`)."""
    def after(http_response, parsed, **_):
        if http_response.status_code < 300 and "FunctionArn" in parsed:
            wait_ready(lam, parsed["FunctionArn"])
    for op in ("CreateFunction", "UpdateFunctionCode", "UpdateFunctionConfiguration"):
        lam.meta.events.register(f"after-call.lambda.{op}", after)
    return lam


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("shared") / "data").start()
    yield s
    s.stop()


@pytest.fixture
def private_server(tmp_path):
    """Starts servers on their own data directory; all are killed after the test."""
    started = []

    def start(data_dir=None, env_keys=True, args=()):
        s = Server(data_dir or tmp_path / "data", env_keys=env_keys, args=list(args)).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def lam(server):
    return server.client()


def logs_client(server):
    return aws_client(server, "logs")


def create(lam, name=None, zip_bytes=HELLO_ZIP, **kw):
    params = dict(FunctionName=name or unique_name(), Runtime="python3.11", Handler="app.handler",
                  Role=ROLE, Code={"ZipFile": zip_bytes})
    params.update(kw)
    return lam.create_function(**params)


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def signed_request(server, method, path, body=b"", headers=None, key=None, secret=None,
                   service="lambda", when=None, presign_expires=None):
    """Sends a request signed by botocore's own signer (header form, or a
    presigned query string with `presign_expires`), optionally as of another
    time; returns (status, headers, body)."""
    url, signed = sign(server, method, path, body, headers, key, secret, service, when, presign_expires)
    return send(method, url, body, signed)


def sign(server, method, path, body=b"", headers=None, key=None, secret=None,
         service="lambda", when=None, presign_expires=None):
    """What `signed_request` sends: its URL and headers. (It patches
    botocore's clock, so sign on one thread; send on any.)"""
    k, s = server.credentials()
    creds = Credentials(key or k, secret or s)
    url = server.endpoint + path
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    if presign_expires is None:
        signer = SigV4Auth(creds, service, REGION)
    else:
        signer = SigV4QueryAuth(creds, service, REGION, expires=presign_expires)
    with mock.patch("botocore.auth.get_current_datetime", lambda: when or datetime.datetime.utcnow()):
        signer.add_auth(req)
    return req.url, dict(req.headers.items())


def send(method, url, body=b"", headers=None):
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def nimbus_cli(server, *args, check=True):
    key, secret = server.credentials()
    env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID=key,
               AWS_SECRET_ACCESS_KEY=secret, AWS_REGION=REGION)
    r = subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"nimbus {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r


def aws_cli(server, *args):
    """Runs the real aws CLI's `lambda` commands; returns (returncode, parsed JSON or None, stderr)."""
    return aws_json(server, "lambda", *args)


def aws_json(server, *args):
    """Runs the real aws CLI; returns (returncode, parsed JSON or None, stderr)."""
    key, secret = server.credentials()
    exe = shutil.which("aws")
    assert exe, "the aws CLI must be installed by the test command"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_DEFAULT_REGION=REGION, AWS_PAGER="")
    env.pop("AWS_PROFILE", None)
    r = subprocess.run([exe, "--endpoint-url", server.endpoint, "--output", "json", *args],
                       capture_output=True, text=True, env=env, timeout=120)
    out = json.loads(r.stdout) if r.stdout.strip() else None
    return r.returncode, out, r.stderr


def function_log(server, name, **kw):
    """A function's log events (FilterLogEvents), none while its log group
    does not exist yet: as on AWS, it appears with the first stored line."""
    try:
        return logs_client(server).filter_log_events(logGroupName=f"/aws/lambda/{name}", **kw)["events"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return []
        raise


def printed_events(server, name):
    """The events a function printed as `EVENT <json>` lines, in the order logged."""
    events = function_log(server, name)
    return [json.loads(e["message"].split("EVENT ", 1)[1]) for e in events if "EVENT {" in e["message"]]


def host_pids(where):
    """Pids of the host's processes (zombies too) for which `where(pid)`
    holds, `pid` a string; a process that ends while it is looked at is
    skipped."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if where(pid):
                found.append(int(pid))
        except (OSError, ValueError, IndexError):
            continue
    return found


def mount_table(text=None):
    """(root, mount point) of each mount a `mountinfo` lists: this
    process's unless `text` is given."""
    text = Path("/proc/self/mountinfo").read_text() if text is None else text
    return [(f[3], f[4]) for f in (line.split(" ") for line in text.splitlines())]


def wait_for(predicate, what, timeout=20.0):
    """Bounded polling for an effect that happens in another process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def blob_files(data_dir):
    root = Path(data_dir) / "blobs"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
