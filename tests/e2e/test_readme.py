"""The README's two commands, run as written on a fresh clone: the run
command serves and the Quick start works against it without writing into
the repository; the test command runs (on one test, since this suite is
its own output). The clone shares this run's Cargo target directory and,
in a mount namespace of its own, is seen at this checkout's path: Cargo
names a workspace crate's build by its path, so under another path it would
build the whole workspace again (about 8 minutes of CPU here). A file the
clone lacks still fails: Cargo finds it missing and builds again."""

import os
import re
import signal
import subprocess

from conftest import REPO, TARGET, free_port
from doc_blocks import code_blocks


def sh_blocks(section):
    """The ```sh blocks of a README section, in order."""
    return code_blocks(REPO / "README.md", section)


def two_commands():
    lines = [l.split("#", 1)[0].strip() for l in sh_blocks("The two commands")[0].splitlines()]
    run, test = [l for l in lines if l]
    return run, test


def fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    # A checkout's files are newer than the shared build: date them back so
    # that Cargo reuses what this run built instead of building it again.
    files = subprocess.run(["git", "ls-files", "-z"], cwd=clone, capture_output=True, check=True).stdout.split(b"\0")
    subprocess.run(["touch", "-d", "2000-01-01", *[f.decode() for f in files if f]], cwd=clone, check=True)
    # Directories too: a build script that watches one (nimbus-model's) compares its time.
    subprocess.run(["find", ".", "-path", "./.git", "-prune", "-o", "-type", "d", "-exec", "touch", "-d", "2000-01-01",
                    "{}", "+"], cwd=clone, check=True)
    return clone


def at_checkout_path(clone, command, tmp_path):
    """An argv running `command` in `clone`, mounted over this checkout in
    a private mount namespace, with the shared target directory kept in view
    (it may lie inside the checkout)."""
    view = tmp_path / "target-view"
    view.mkdir(parents=True)
    # Arguments: the target, its view, the clone, the checkout, the command.
    script = """set -e
mount --bind "$1" "$2"
mount --bind "$3" "$4"
mkdir -p "$1"
mount --bind "$2" "$1"
cd "$4"
exec bash -c "$5"
"""
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "at-checkout-path",
            str(TARGET), str(view), str(clone), str(REPO), command]


def test_the_readme_commands_work_on_a_fresh_clone(tmp_path):
    # The clone is of HEAD, and Cargo trusts this run's build for it: what
    # was built must be HEAD.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout
    assert dirty == "", f"commit first: the fresh clone is of HEAD, and this run built the working tree:\n{dirty}"
    run, test = two_commands()
    assert run == "cargo run --release -- serve" and test == "scripts/test"
    clone = fresh_clone(tmp_path)
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET), NIMBUS_LISTEN=f"127.0.0.1:{free_port()}")
    for var in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "NIMBUS_ACCESS_KEY_ID",
                "NIMBUS_SECRET_ACCESS_KEY", "NIMBUS_DATA_DIR"):
        env.pop(var, None)
    log = open(tmp_path / "serve.log", "w+")
    serve = subprocess.Popen(at_checkout_path(clone, run, tmp_path), env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        exports = {}
        for line in serve.stdout:  # the run command prints its exports once it serves
            if m := re.match(r"export (.+)$", line.strip()):
                for pair in m.group(1).split():
                    key, value = pair.split("=", 1)
                    exports[key] = value
            if "AWS_SECRET_ACCESS_KEY" in exports:
                break
        log.seek(0)
        assert "AWS_SECRET_ACCESS_KEY" in exports, f"the run command did not start:\n{log.read()}"
        # Sharing the target directory at the same path, the clone builds nothing again.
        compiled = re.findall(r"Compiling (\S+) v", log.read())
        assert not compiled, f"the clone built again: {compiled}"

        quick = dict(os.environ, **exports, AWS_PAGER="")
        quick.pop("AWS_PROFILE", None)
        # The aws CLI's blocks, then the nimbus CLI's in the same shell (it
        # uses their `$tmp` and event) with the binary the run command built,
        # all but the benchmark, which runs for minutes (test_bench.py runs it).
        aws_blocks, nimbus_block = sh_blocks("Quick start")[:2], sh_blocks("Quick start")[2]
        nimbus_lines = [l for l in nimbus_block.splitlines() if not l.startswith("nimbus bench")]
        assert len(nimbus_lines) == len(nimbus_block.splitlines()) - 1, nimbus_block
        script = "set -euo pipefail\n" + "\n".join([*aws_blocks, *nimbus_lines])
        quick["PATH"] = f"{TARGET / 'release'}:{quick['PATH']}"
        out = subprocess.run(["bash", "-c", script], cwd=clone, env=quick, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert '"FunctionName": "hello"' in out.stdout and "Hello, Nimbus" in out.stdout, out.stdout
        assert "Queued" in out.stdout, out.stdout
        status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
        assert status == "", f"the Quick start wrote into the repository:\n{status}"
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)

    # The test command, narrowed to one quick test: the whole suite is what is running now.
    r = subprocess.run(at_checkout_path(clone, f"{test} -k test_valid_signature_lists", tmp_path / "test"),
                       env=dict(os.environ, CARGO_TARGET_DIR=str(TARGET)), capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"\b1 passed\b", r.stdout), r.stdout[-2000:]
