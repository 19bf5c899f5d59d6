"""examples/streaming's README, run as written against a real server: the
deploy, the RESPONSE_STREAM URL read with `curl -N`, and the boto3
InvokeWithResponseStream loop. (Its aws CLI v2 command is not run: the
suite's CLI is v1, which lacks invoke-with-response-stream.)"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import BIN, REGION, REPO
from doc_blocks import code_blocks

README = REPO / "examples" / "streaming" / "README.md"


def shell_env(server):
    key, secret = server.credentials()
    env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION,
               AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_PAGER="",
               PATH=f"{Path(BIN).parent}:{os.environ['PATH']}")
    env.pop("AWS_PROFILE", None)
    return env


def test_the_readme_streams_through_curl_and_boto3(private_server):
    server = private_server()
    env = shell_env(server)
    (deploy,) = code_blocks(README, "Deploy")
    (url_block,) = code_blocks(README, "Call it through a function URL")
    script = "\n".join(["set -euo pipefail", deploy, url_block])
    p = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    arrivals = []
    for line in iter(p.stdout.readline, b""):
        arrivals.append((time.monotonic(), line.decode()))
    assert p.wait(timeout=180) == 0, p.stderr.read().decode() + server.output()[-3000:]
    lines = [l for _, l in arrivals if l.startswith(("chunk", "done"))]
    assert [re.sub(r" at .*", "", l.strip()) for l in lines] == [f"chunk {i} of 5" for i in range(1, 6)] + ["done"]
    chunk_times = [t for t, l in arrivals if l.startswith("chunk")]
    assert chunk_times[-1] - chunk_times[0] > 0.8, "curl printed the lines as the function wrote them"

    (snippet,) = code_blocks(README, "Call it with InvokeWithResponseStream", "python")
    r = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "chunk 5 of 5" in r.stdout and "done" in r.stdout
    assert re.search(r"complete: \{.*\}", r.stdout) and "ErrorCode" not in r.stdout
