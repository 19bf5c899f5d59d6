"""examples/http-api's README, run as written against a real server: the
deploy, the URL made public with the aws CLI or with `nimbus function url`,
and every curl call of its sessions, whose output must be what the README
shows."""

import os
import re
import subprocess
from pathlib import Path

import requests

from conftest import BIN, REGION, REPO
from doc_blocks import code_blocks

README = REPO / "examples" / "http-api" / "README.md"


def session(block):
    """A ```console block as (command, expected output) steps: `$ ` starts
    a command, a trailing backslash continues it, other lines are output."""
    steps = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append([line[2:], []])
        elif steps[-1][0].endswith("\\"):
            steps[-1][0] += "\n" + line
        else:
            steps[-1][1].append(line)
    return [(command, "\n".join(out)) for command, out in steps]


def run_readme(server, setup, steps, teardown=""):
    """Runs the setup blocks, then each step, then the teardown, in one shell
    from the repository root, as a reader would; returns each step's output
    and the URL the shell ended with."""
    key, secret = server.credentials()
    env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION,
               AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_PAGER="",
               PATH=f"{Path(BIN).parent}:{os.environ['PATH']}")
    env.pop("AWS_PROFILE", None)
    script = ["set -euo pipefail", *setup]
    for i, (command, _) in enumerate(steps):
        script += [f"echo '@@step {i}'", command]
    script += ["echo '@@end'", 'echo "$URL"', teardown]
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{server.output()[-3000:]}"
    body, rest = r.stdout.split("@@end\n")
    outputs = re.split(r"^@@step \d+\n", body, flags=re.M)[1:]
    return [o.rstrip("\n") for o in outputs], rest.splitlines()[0]


def check(outputs, steps):
    assert len(outputs) == len(steps)
    for out, (command, expected) in zip(outputs, steps):
        assert out == expected, f"$ {command}\ngave:\n{out}\nthe README shows:\n{expected}"


def test_the_readme_with_the_aws_cli(private_server):
    server = private_server()
    deploy, aws_url, _, clean_up = code_blocks(README, "Deploy") + code_blocks(README, "Clean up")
    calls = session(code_blocks(README, "Call it", "console")[0])
    closed = session(code_blocks(README, "Call it", "console")[1])
    outputs, url = run_readme(server, [deploy, aws_url], calls + closed, clean_up)
    check(outputs, calls + closed)
    # Handed out in the path form, and deleted with its function.
    assert re.fullmatch(re.escape(server.endpoint) + r"/lambda-url/[a-z0-9]{32}/", url), url
    r = requests.get(url + "items", timeout=30)
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"] == "AccessDeniedException"


def test_the_readme_with_the_nimbus_shortcut(private_server):
    server = private_server()
    deploy, _, shortcut = code_blocks(README, "Deploy")
    calls = session(code_blocks(README, "Call it", "console")[0])
    outputs, url = run_readme(server, [deploy, shortcut], calls)
    check(outputs, calls)
    # What curl's output cannot show: the headers of the answers.
    r = requests.put(url + "items", timeout=30)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert r.headers["content-type"] == "application/json"
    r = requests.post(url + "items", json={"name": "plum"}, timeout=30)
    assert r.status_code == 201 and r.headers["location"] == f"/items/{r.json()['id']}"
    # A body of no text type reaches the function base64-encoded; it decodes it.
    r = requests.post(url + "items", data=b'{"name": "fig"}', timeout=30,
                      headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201 and r.json()["name"] == "fig"
