"""Fixtures of the Nimbus end-to-end suite.

A session-wide `nimbus serve` (fixture `server`) backs most tests; tests that
need exact account numbers, a restart or a kill get a private server from the
`private_server` factory. Run with:

    /tmp/e2e-venv/bin/pytest tests/e2e

Environment: NIMBUS_BIN (default <repo>/target/debug/nimbus),
NIMBUS_E2E_START_TIMEOUT (seconds to wait for readiness, default 10).
"""

from __future__ import annotations

import pytest

from helpers import (
    NimbusServer,
    ServerStartError,
    lambda_client,
    run_aws,
    run_nimbus_cli,
)


def _start(srv: NimbusServer) -> NimbusServer:
    try:
        return srv.start()
    except ServerStartError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> NimbusServer:
    """The shared `nimbus serve`: .endpoint, .data_dir, .access_key, .secret_key."""
    srv = NimbusServer(tmp_path_factory.mktemp("nimbus-session"), name="session")
    _start(srv)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def lam(server):
    """boto3 lambda client for the shared server (retries off)."""
    return lambda_client(server.endpoint, server.access_key, server.secret_key)


@pytest.fixture(scope="session")
def lam_unchecked(server):
    """Like `lam` but without botocore's client-side parameter validation, so
    out-of-range values (below a model minimum, missing members) reach the server."""
    return lambda_client(
        server.endpoint, server.access_key, server.secret_key, parameter_validation=False
    )


@pytest.fixture
def aws(server, tmp_path):
    """aws(*args) -> (returncode, parsed json or None, stderr) for `aws lambda ARGS`."""

    def run(*args: str):
        return run_aws(server, list(args), cwd=tmp_path)

    return run


@pytest.fixture
def nimbus_cli(server, tmp_path):
    """nimbus_cli(*args, env_endpoint=True) -> CompletedProcess of `$NIMBUS_BIN ARGS`."""

    def run(*args: str, env_endpoint: bool = True):
        return run_nimbus_cli(server, list(args), cwd=tmp_path, env_endpoint=env_endpoint)

    return run


@pytest.fixture
def private_server(tmp_path):
    """Factory: private_server(credentials=True, data_dir=None, known_keys=None)
    starts a server of the test's own; it can be .kill()ed (SIGKILL),
    .terminate()d and .restart()ed on the same data dir and port."""
    started: list[NimbusServer] = []

    def start(*, credentials: bool = True, data_dir=None, known_keys=None) -> NimbusServer:
        n = len(started) + 1
        srv = NimbusServer(
            tmp_path / f"private-{n}",
            name=f"private-{n}",
            with_credentials=credentials,
            data_dir=data_dir,
            known_keys=known_keys,
        )
        started.append(srv)
        return _start(srv)

    start.servers = started
    yield start
    for srv in started:
        srv.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the log of every Nimbus server the test used."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    seen = set()
    for value in getattr(item, "funcargs", {}).values():
        servers = [value] if isinstance(value, NimbusServer) else getattr(value, "servers", [])
        for srv in servers:
            if isinstance(srv, NimbusServer) and id(srv) not in seen:
                seen.add(id(srv))
                rep.sections.append((f"nimbus server log ({srv.name})", srv.log_tail()))
