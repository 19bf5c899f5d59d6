"""What a new user meets in the first hour: one server per data directory,
start-up errors that name their path, what the start prints and logs, the
region a request is signed for, runtime discovery with a venv first on
PATH, and mounts that never outlive the node."""

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from conftest import BIN, Server, create, error_code, free_port, make_zip, send, unique_name, wait_for
from test_sandbox import assert_restart_cleared, env_dirs, mount_entries, mount_points_under


def run_serve(*args, cwd=None, env=None, timeout=20):
    """Runs a `nimbus serve` expected to refuse to start."""
    e = dict(os.environ, NIMBUS_LOG="info", **(env or {}))
    return subprocess.run([BIN, "serve", *args], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout)


def test_a_second_server_on_one_directory_refuses_and_leaves_the_first_alone(private_server, tmp_path):
    first = private_server(tmp_path / "data")
    lam = first.client()
    name = create(lam)["FunctionName"]
    assert json.loads(lam.invoke(FunctionName=name, Payload=b'{"n": 1}')["Payload"].read()) == {"n": 1}
    mounts = mount_points_under(first.data_dir)
    cgroups = env_dirs(first)

    second = run_serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(first.data_dir))
    assert second.returncode != 0
    assert f"another nimbus server (pid {first.proc.pid}) is using the data directory {first.data_dir}" in second.stderr
    # Nothing of the first server's was touched: its mounts and environments are all there, and it serves.
    # (It may have more: the template the invoke took is replaced once the invoke is answered.)
    assert mounts <= mount_points_under(first.data_dir)
    assert cgroups <= env_dirs(first)
    assert json.loads(lam.invoke(FunctionName=name, Payload=b'{"n": 2}')["Payload"].read()) == {"n": 2}
    # The same directory on the same port, as a second `nimbus serve` in the
    # same place is started: the directory's holder is named, not the port.
    same = run_serve("--listen", f"127.0.0.1:{first.port}", "--data-dir", str(first.data_dir))
    assert same.returncode != 0
    assert f"another nimbus server (pid {first.proc.pid}) is using the data directory" in same.stderr, same.stderr
    assert "Address already in use" not in same.stderr


def test_a_taken_port_fails_the_start_before_the_store_is_made(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_serve("--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "new"))
    assert r.returncode != 0
    assert f"binding 127.0.0.1:{port}" in r.stderr and "Address already in use" in r.stderr, r.stderr
    assert os.listdir(tmp_path / "new") == ["nimbus.lock"], "no key file, no store before the listener is bound"


def test_a_bad_uid_range_is_refused_before_the_sandbox_factory_starts(tmp_path):
    # A factory started first said its node was gone when the node's error
    # ended it first, as often as not: a few starts show it.
    for attempt in range(5):
        r = run_serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data"),
                      "--sandbox-uids", "5-1")
        assert r.returncode != 0
        assert "the sandbox user range 5-1 is empty" in r.stderr, r.stderr
        assert "factory" not in r.stderr, (attempt, r.stderr)


def test_listen_takes_localhost_or_a_bare_port_and_shows_the_form_otherwise(tmp_path):
    bad = run_serve("--listen", "example.com:9070", "--data-dir", str(tmp_path / "bad"))
    assert bad.returncode != 0 and "give IP:PORT (127.0.0.1:9070" in bad.stderr, bad.stderr
    for form in ("localhost:{}", "{}"):
        port = free_port()
        log = open(tmp_path / f"serve-{port}.log", "w+")
        serve = subprocess.Popen([BIN, "serve", "--listen", form.format(port), "--data-dir", str(tmp_path / str(port)),
                                  "--isolation", "process", "--prewarm", "0"], stdout=log, stderr=subprocess.STDOUT)
        try:
            def answers():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    return True
                except OSError:
                    return serve.poll() is not None and pytest.fail(open(log.name).read())
            wait_for(answers, f"--listen {form.format(port)} to serve on 127.0.0.1:{port}")
        finally:
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=20) == 0


def test_data_directory_errors_name_the_path_and_say_each_cause_once(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = run_serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(blocker / "data"))
    assert r.returncode != 0
    assert f"creating the data directory {blocker / 'data'}" in r.stderr, r.stderr
    r = run_serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(blocker))
    assert r.returncode != 0
    assert f"the data directory {blocker} is not a directory" in r.stderr, r.stderr

    data = tmp_path / "data"
    (data / "metadata.db").mkdir(parents=True)  # a database file that cannot be opened
    r = run_serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data))
    assert r.returncode != 0
    error = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"opening the metadata store {data / 'metadata.db'}" in error[0], r.stderr
    assert error[0].count("unable to open database file") == 1, error[0]

    # A store's own directory taken by a file: the error names it, not its parent.
    for taken in ("objects/data", "registry/uploads"):
        data = tmp_path / taken.replace("/", "-")
        (data / taken).parent.mkdir(parents=True)
        (data / taken).write_text("not a directory")
        r = run_serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data), "--isolation", "process")
        assert r.returncode != 0
        assert f"{data / taken}: " in r.stderr, r.stderr


def test_the_secret_is_printed_only_when_it_was_made(private_server, tmp_path):
    s = private_server(tmp_path / "data", env_keys=False)
    _, secret = s.credentials()
    assert f"export AWS_SECRET_ACCESS_KEY={secret}" in s.output()
    s.stop()
    again = private_server(tmp_path / "data", env_keys=False)
    out = again.output()
    assert secret not in out
    assert f"the secret_access_key in {tmp_path / 'data' / 'credentials.json'}" in out
    # From the environment: never printed.
    from_env = private_server(tmp_path / "other")
    assert from_env.credentials()[1] not in from_env.output()
    assert "as set in NIMBUS_SECRET_ACCESS_KEY" in from_env.output()


def test_logs_written_to_a_file_have_no_colour_codes(server, lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=unique_name("absent"))
    out = server.output()
    assert "\x1b[" not in out
    assert "INFO" in out and "ready" in out


def test_a_request_signed_for_another_region_gets_aws_answer(server):
    key, secret = server.credentials()
    req = AWSRequest(method="GET", url=server.endpoint + "/2015-03-31/functions")
    SigV4Auth(Credentials(key, secret), "lambda", "eu-west-1").add_auth(req)
    status, headers, body = send("GET", req.url, b"", dict(req.headers.items()))
    assert status == 403
    assert headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert json.loads(body)["message"] == "Credential should be scoped to a valid region, not 'eu-west-1'. "
    other = boto3.client("lambda", endpoint_url=server.endpoint, region_name="eu-west-1",
                         aws_access_key_id=key, aws_secret_access_key=secret,
                         config=Config(retries={"max_attempts": 1}))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        other.list_functions()
    assert error_code(e) == "InvalidSignatureException"


def test_java_is_refused_at_create_time(lam):
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, Runtime="java17", Handler="example.Handler::handleRequest")
    message = e.value.response["Error"]["Message"]
    assert "java17" in message and "python3.11" in message and "provided.al2023" in message


FAILING = make_zip({
    "boom.py": "raise RuntimeError('init went wrong')\n",
    "slow.py": "import time\n\ndef handler(event, context):\n    time.sleep(5)\n",
})


def test_function_failures_are_logged_at_warn_and_client_mistakes_are_not(private_server, tmp_path):
    s = private_server(tmp_path / "data")
    lam = s.client()
    boom = create(lam, zip_bytes=FAILING, Handler="boom.handler")["FunctionName"]
    slow = create(lam, zip_bytes=FAILING, Handler="slow.handler", Timeout=1)["FunctionName"]
    ids = {}
    for name in (boom, slow):
        r = lam.invoke(FunctionName=name, Payload=b"{}")
        assert r["FunctionError"] == "Unhandled"
        ids[name] = r["ResponseMetadata"]["RequestId"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=unique_name("absent"))

    def warned(name, what):
        return [l for l in s.output().splitlines()
                if " WARN " in l and what in l and name in l and ids[name] in l]

    # The server says what failed, for which function and request.
    wait_for(lambda: warned(boom, "function init failed"), "the init failure's WARN line")
    wait_for(lambda: warned(slow, "function timed out"), "the timeout's WARN line")
    assert "ResourceNotFoundException" not in s.output(), "a client's 404 is not logged at INFO"


def test_a_template_that_dies_is_logged(private_server, tmp_path):
    s = private_server(tmp_path / "data")
    # Before any function exists, every environment is a template. One whose
    # interpreter runs is made (its sandbox start is over): kill its processes.
    def runs_interpreter(cgroup):
        def exe(pid):
            try:
                return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            except OSError:
                return ""
        return any(exe(p).startswith(("python", "node")) for p in (cgroup / "cgroup.procs").read_text().split())

    cgroup = wait_for(lambda: next((d for d in env_dirs(s) if runs_interpreter(d)), None), "a made template")
    for pid in (cgroup / "cgroup.procs").read_text().split():
        os.kill(int(pid), signal.SIGKILL)
    wait_for(lambda: "a template exited before it was used" in s.output(), "the dead template's WARN line")


def test_a_venv_first_on_path_does_not_break_python(tmp_path):
    # A real interpreter outside /usr, as pyenv installs one under a home directory.
    venv = tmp_path / "pyenv" / "bin"
    venv.mkdir(parents=True)
    shutil.copy("/usr/bin/python3.11", venv / "python3.11")
    os.symlink("python3.11", venv / "python3")
    # And pyenv's shims before it: scripts, for a version /usr lacks too.
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in ("python3.11", "python3.12"):
        (shims / name).write_text("#!/bin/sh\nexec pyenv exec \"$0\" \"$@\"\n")
        (shims / name).chmod(0o755)
    s = Server(tmp_path / "data")
    old = os.environ["PATH"]
    os.environ["PATH"] = f"{shims}:{venv}:{old}"
    try:
        s.start()
    finally:
        os.environ["PATH"] = old
    try:
        lam = s.client()
        name = create(lam)["FunctionName"]
        r = lam.invoke(FunctionName=name, Payload=b'{"ok": true}')
        assert "FunctionError" not in r
        assert json.loads(r["Payload"].read()) == {"ok": True}
        assert str(venv / "python3.11") in s.output(), "the passed-over interpreter is named at start-up"
        assert "interpreters outside what a sandbox sees" in s.output()
        said = [line for line in s.output().splitlines() if "python3.12 (a script, such as a pyenv shim)" in line]
        assert said, s.output()
    finally:
        s.stop()


MOUNT_PROBE = make_zip({"app.py": "def handler(event, context):\n    return event\n"})


def run_of_operations(lam):
    """Create, update, version, alias, layer, invoke and delete: every call that makes mounts."""
    layer = lam.publish_layer_version(LayerName=unique_name("lay"), Content={"ZipFile": make_zip({"python/x.py": "X = 1\n"})})
    names = []
    for i in range(3):
        name = create(lam, zip_bytes=MOUNT_PROBE, Layers=[layer["LayerVersionArn"]])["FunctionName"]
        lam.invoke(FunctionName=name, Payload=b"{}")
        lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": f"def handler(e, c):\n    return {i}\n"}))
        lam.invoke(FunctionName=name, Payload=b"{}")
        version = lam.publish_version(FunctionName=name)["Version"]
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
        lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
        names.append(name)
    lam.delete_alias(FunctionName=names[0], Name="live")
    lam.delete_function(FunctionName=names[0], Qualifier="1")
    lam.delete_function(FunctionName=names[1])
    return names


def test_no_mount_outlives_a_graceful_stop_even_with_a_relative_data_dir(tmp_path):
    # The default data directory is relative (./.nimbus): mounts must be found all the same.
    s = Server(Path("data"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        s.start()
        s.data_dir = tmp_path / "data"
        run_of_operations(s.client())
        assert mount_points_under(s.data_dir), "the run made mounts"
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=30) == 0
    finally:
        os.chdir(cwd)
        s.stop()
    assert mount_points_under(tmp_path / "data") == set()


def test_the_next_start_removes_the_mounts_a_killed_node_left(private_server, tmp_path):
    s = private_server(tmp_path / "data")
    run_of_operations(s.client())
    s.kill(unmount=False)
    left = mount_entries(s.data_dir)
    assert left, "a killed node leaves its mounts"
    # Ready means cleaned: the restart listens only after taking down what the killed node left.
    again = private_server(tmp_path / "data")
    assert_restart_cleared(left, mount_entries(again.data_dir))
    again.stop()
    assert mount_points_under(again.data_dir) == set()
