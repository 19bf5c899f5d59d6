"""The real aws CLI, and the nimbus CLI, against a real server."""

import datetime
import json
import os
import re
import signal
import subprocess

from conftest import BIN, HELLO_ZIP, ROLE, arn, code_sha256, create, nimbus_cli, unique_name, aws_cli, wait_for


def test_aws_cli_lifecycle(server, tmp_path):
    zip_path = tmp_path / "hello.zip"
    zip_path.write_bytes(HELLO_ZIP)
    name = unique_name("cli")
    rc, out, err = aws_cli(server, "create-function", "--function-name", name, "--runtime", "python3.11",
                           "--handler", "app.handler", "--role", ROLE, "--zip-file", f"fileb://{zip_path}")
    assert rc == 0, err
    assert out["FunctionArn"] == arn(name) and out["CodeSha256"] == code_sha256(HELLO_ZIP)
    assert out["State"] == "Pending" and out["StateReasonCode"] == "Creating"
    rc, _, err = aws_cli(server, "wait", "function-active-v2", "--function-name", name)
    assert rc == 0, err
    rc, out, err = aws_cli(server, "publish-version", "--function-name", name)
    assert rc == 0 and out["Version"] == "1", err
    rc, out, err = aws_cli(server, "create-alias", "--function-name", name, "--name", "live", "--function-version", "1")
    assert rc == 0 and out["AliasArn"] == arn(name, "live"), err
    rc, out, err = aws_cli(server, "get-function", "--function-name", f"{name}:live")
    assert rc == 0 and out["Configuration"]["Version"] == "1", err
    rc, out, err = aws_cli(server, "list-functions")
    assert rc == 0 and name in [f["FunctionName"] for f in out["Functions"]], err
    rc, _, err = aws_cli(server, "wait", "function-active-v2", "--function-name", name)
    assert rc == 0, err
    rc, _, err = aws_cli(server, "delete-function", "--function-name", name)
    assert rc == 0, err
    rc, _, err = aws_cli(server, "get-function", "--function-name", name)
    assert rc != 0 and "ResourceNotFoundException" in err


def test_nimbus_cli_deploy_list_get_delete(server, lam, tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "app.py").write_text("def handler(e, c):\n    return 1\n")
    (src / "pkg" / "util.py").write_text("X = 1\n")
    name = unique_name("deploy")
    first = json.loads(nimbus_cli(server, "function", "deploy", str(src), "--name", name, "--runtime", "python3.11",
                                  "--handler", "app.handler", "--memory", "256", "--timeout", "10",
                                  "--env", "STAGE=dev", "--env", "MODE=x=y", "--json").stdout)
    assert first["FunctionName"] == name and first["MemorySize"] == 256 and first["Timeout"] == 10
    stored = lam.get_function_configuration(FunctionName=name)
    assert stored["Environment"]["Variables"] == {"STAGE": "dev", "MODE": "x=y"}
    assert stored["CodeSha256"] == first["CodeSha256"]

    (src / "app.py").touch()  # same content, new mtime: same archive
    second = json.loads(nimbus_cli(server, "function", "deploy", str(src), "--name", name, "--json").stdout)
    assert second["CodeSha256"] == first["CodeSha256"], "deterministic zip"
    (src / "app.py").write_text("def handler(e, c):\n    return 2\n")
    third = json.loads(nimbus_cli(server, "function", "deploy", str(src), "--name", name, "--memory", "512", "--json").stdout)
    assert third["CodeSha256"] != first["CodeSha256"] and third["MemorySize"] == 512
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == third["CodeSha256"]

    listed = json.loads(nimbus_cli(server, "function", "list", "--json").stdout)
    assert name in [f["FunctionName"] for f in listed["Functions"]]
    assert name in nimbus_cli(server, "function", "list").stdout
    got = json.loads(nimbus_cli(server, "function", "get", name, "--json").stdout)
    assert got["CodeSha256"] == third["CodeSha256"]
    zip_path = tmp_path / "hello.zip"
    zip_path.write_bytes(HELLO_ZIP)
    layer = json.loads(nimbus_cli(server, "layer", "publish", unique_name("lay"), str(zip_path),
                                  "--compatible-runtime", "python3.11", "--json").stdout)
    assert layer["Version"] == 1 and layer["CompatibleRuntimes"] == ["python3.11"]
    assert layer["Content"]["CodeSha256"] == code_sha256(HELLO_ZIP)

    nimbus_cli(server, "function", "delete", name)
    failed = nimbus_cli(server, "function", "get", name, check=False)
    assert failed.returncode != 0 and "ResourceNotFoundException" in failed.stderr


def test_aws_cli_covers_every_operation_group(server, tmp_path):
    zip_path = tmp_path / "code.zip"
    zip_path.write_bytes(HELLO_ZIP)
    name = unique_name("cliops")
    layer = unique_name("clilayer")
    fn_arn = arn(name)
    steps = [
        (["create-function", "--function-name", name, "--runtime", "python3.11", "--handler", "app.handler",
          "--role", ROLE, "--zip-file", f"fileb://{zip_path}", "--tags", "team=a"], lambda o: o["FunctionName"] == name),
        (["wait", "function-active-v2", "--function-name", name], lambda o: o is None),
        (["update-function-configuration", "--function-name", name, "--memory-size", "256"], lambda o: o["MemorySize"] == 256),
        (["wait", "function-updated-v2", "--function-name", name], lambda o: o is None),
        (["update-function-code", "--function-name", name, "--zip-file", f"fileb://{zip_path}", "--publish"],
         lambda o: o["Version"] == "1"),
        (["wait", "function-updated-v2", "--function-name", name], lambda o: o is None),
        (["get-function-configuration", "--function-name", name, "--qualifier", "1"], lambda o: o["Version"] == "1"),
        (["list-versions-by-function", "--function-name", name], lambda o: len(o["Versions"]) == 2),
        (["create-alias", "--function-name", name, "--name", "live", "--function-version", "1"], lambda o: o["Name"] == "live"),
        (["update-alias", "--function-name", name, "--name", "live", "--description", "d"], lambda o: o["Description"] == "d"),
        (["list-aliases", "--function-name", name], lambda o: [a["Name"] for a in o["Aliases"]] == ["live"]),
        (["put-function-concurrency", "--function-name", name, "--reserved-concurrent-executions", "3"],
         lambda o: o["ReservedConcurrentExecutions"] == 3),
        (["get-function-concurrency", "--function-name", name], lambda o: o["ReservedConcurrentExecutions"] == 3),
        (["put-provisioned-concurrency-config", "--function-name", name, "--qualifier", "live",
          "--provisioned-concurrent-executions", "1"], lambda o: o["RequestedProvisionedConcurrentExecutions"] == 1),
        (["list-provisioned-concurrency-configs", "--function-name", name],
         lambda o: len(o["ProvisionedConcurrencyConfigs"]) == 1),
        (["tag-resource", "--resource", fn_arn, "--tags", "env=dev"], lambda o: o is None),
        (["list-tags", "--resource", fn_arn], lambda o: o["Tags"] == {"team": "a", "env": "dev"}),
        (["untag-resource", "--resource", fn_arn, "--tag-keys", "team"], lambda o: o is None),
        (["publish-layer-version", "--layer-name", layer, "--zip-file", f"fileb://{zip_path}"], lambda o: o["Version"] == 1),
        (["list-layers"], lambda o: layer in [x["LayerName"] for x in o["Layers"]]),
        (["list-layer-versions", "--layer-name", layer], lambda o: [v["Version"] for v in o["LayerVersions"]] == [1]),
        (["get-layer-version", "--layer-name", layer, "--version-number", "1"], lambda o: o["Version"] == 1),
        (["create-function-url-config", "--function-name", name, "--auth-type", "NONE"], lambda o: o["AuthType"] == "NONE"),
        (["list-function-url-configs", "--function-name", name], lambda o: len(o["FunctionUrlConfigs"]) == 1),
        (["put-function-event-invoke-config", "--function-name", name, "--maximum-retry-attempts", "0"],
         lambda o: o["MaximumRetryAttempts"] == 0),
        (["list-function-event-invoke-configs", "--function-name", name],
         lambda o: len(o["FunctionEventInvokeConfigs"]) == 1),
        (["add-permission", "--function-name", name, "--statement-id", "s1", "--action", "lambda:InvokeFunction",
          "--principal", "events.amazonaws.com"], lambda o: json.loads(o["Statement"])["Sid"] == "s1"),
        (["get-policy", "--function-name", name], lambda o: "s1" in o["Policy"]),
        (["remove-permission", "--function-name", name, "--statement-id", "s1"], lambda o: o is None),
        (["get-account-settings"], lambda o: o["AccountUsage"]["FunctionCount"] >= 1),
        (["put-function-recursion-config", "--function-name", name, "--recursive-loop", "Allow"],
         lambda o: o["RecursiveLoop"] == "Allow"),
        (["get-function-recursion-config", "--function-name", name], lambda o: o["RecursiveLoop"] == "Allow"),
        (["put-runtime-management-config", "--function-name", name, "--update-runtime-on", "FunctionUpdate"],
         lambda o: o["UpdateRuntimeOn"] == "FunctionUpdate"),
        (["get-runtime-management-config", "--function-name", name], lambda o: o["UpdateRuntimeOn"] == "FunctionUpdate"),
        (["add-layer-version-permission", "--layer-name", layer, "--version-number", "1", "--statement-id", "all",
          "--action", "lambda:GetLayerVersion", "--principal", "*"], lambda o: json.loads(o["Statement"])["Sid"] == "all"),
        (["get-layer-version-policy", "--layer-name", layer, "--version-number", "1"], lambda o: "all" in o["Policy"]),
        (["remove-layer-version-permission", "--layer-name", layer, "--version-number", "1", "--statement-id", "all"],
         lambda o: o is None),
        (["delete-layer-version", "--layer-name", layer, "--version-number", "1"], lambda o: o is None),
        (["delete-alias", "--function-name", name, "--name", "live"], lambda o: o is None),
        (["delete-function", "--function-name", name], lambda o: o in (None, {"StatusCode": 204})),
    ]
    for args, check in steps:
        rc, out, err = aws_cli(server, *args)
        assert rc == 0, f"aws lambda {args[0]}: {err}"
        assert check(out), f"aws lambda {args[0]} returned {out}"


def test_nimbus_cli_layers_async_logs_and_completions(server, lam, tmp_path):
    layer_dir = tmp_path / "layer" / "python"
    layer_dir.mkdir(parents=True)
    (layer_dir / "greeting.py").write_text("WORD = 'from-the-layer'\n")
    layer_name = unique_name("clilayer")
    layer = json.loads(nimbus_cli(server, "layer", "publish", layer_name, str(tmp_path / "layer"), "--json").stdout)
    listed = nimbus_cli(server, "layer", "list").stdout
    assert layer_name in listed and layer["LayerVersionArn"] in listed

    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("import greeting\n\ndef handler(e, c):\n    print('cli-log-line', e)\n    return greeting.WORD\n")
    name = unique_name("clifn")
    deployed = json.loads(nimbus_cli(server, "function", "deploy", str(src), "--name", name, "--runtime", "python3.11",
                                     "--handler", "app.handler", "--layer", layer["LayerVersionArn"], "--json").stdout)
    assert [l["Arn"] for l in deployed["Layers"]] == [layer["LayerVersionArn"]]
    assert nimbus_cli(server, "invoke", name).stdout.strip() == '"from-the-layer"'

    queued = nimbus_cli(server, "invoke", name, '{"async": 1}', "--async").stdout
    match = re.match(r"Queued: the event will run asynchronously \(request id ([0-9a-f-]{36})\)", queued)
    assert match, queued
    wait_for(lambda: f"START RequestId: {match.group(1)}" in nimbus_cli(server, "logs", name).stdout,
             "the queued event to run")

    # CloudWatch keeps a deleted function's logs, and so does `nimbus logs`.
    nimbus_cli(server, "function", "delete", name)
    assert "cli-log-line {'async': 1}" in nimbus_cli(server, "logs", name).stdout
    # --since takes what `nimbus usage --since` takes.
    for since in ("7d", "12h", "30m", "3600", "2000-01-01", "2000-01-01T00:00:00Z"):
        assert "cli-log-line {'async': 1}" in nimbus_cli(server, "logs", name, "--since", since).stdout, since
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
    assert "cli-log-line" not in nimbus_cli(server, "logs", name, "--since", later).stdout
    bad = nimbus_cli(server, "logs", name, "--since", "7x", check=False)
    assert bad.returncode != 0 and "is not a duration back from now" in bad.stderr, bad.stderr
    # A name with neither a function nor a log group (a typo) is said so, not an empty success.
    typo = nimbus_cli(server, "logs", name + "-typo", check=False)
    assert typo.returncode != 0 and f"no function named {name}-typo" in typo.stderr, typo.stderr

    nimbus_cli(server, "layer", "delete", layer_name, "1")
    assert layer_name not in nimbus_cli(server, "layer", "list").stdout

    script = nimbus_cli(server, "completions", "bash").stdout
    assert "complete" in script and "nimbus" in script and "deploy" in script


def test_aws_cli_code_signing_configs(server):
    signer = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/cli/0123456789"
    rc, out, err = aws_cli(server, "create-code-signing-config", "--allowed-publishers",
                           f"SigningProfileVersionArns={signer}", "--code-signing-policies",
                           "UntrustedArtifactOnDeployment=Enforce")
    assert rc == 0, err
    csc_arn = out["CodeSigningConfig"]["CodeSigningConfigArn"]
    rc, out, err = aws_cli(server, "get-code-signing-config", "--code-signing-config-arn", csc_arn)
    assert rc == 0 and out["CodeSigningConfig"]["CodeSigningPolicies"]["UntrustedArtifactOnDeployment"] == "Enforce", err
    rc, out, err = aws_cli(server, "list-code-signing-configs")
    assert rc == 0 and csc_arn in [c["CodeSigningConfigArn"] for c in out["CodeSigningConfigs"]], err
    rc, out, err = aws_cli(server, "list-functions-by-code-signing-config", "--code-signing-config-arn", csc_arn)
    assert rc == 0 and out["FunctionArns"] == [], err
    rc, _, err = aws_cli(server, "delete-code-signing-config", "--code-signing-config-arn", csc_arn)
    assert rc == 0, err
    rc, _, err = aws_cli(server, "get-code-signing-config", "--code-signing-config-arn", csc_arn)
    assert rc != 0 and "ResourceNotFoundException" in err


def test_a_client_command_whose_reader_is_gone_ends_quietly_and_serve_ignores_sigpipe(server, lam):
    for _ in range(3):
        create(lam)
    read, write = os.pipe()
    os.close(read)  # before the command writes anything: its first write meets a closed pipe
    key, secret = server.credentials()
    env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    try:
        r = subprocess.run([BIN, "function", "list"], stdout=write, stderr=subprocess.PIPE, text=True, env=env,
                           timeout=60)
    finally:
        os.close(write)
    assert r.returncode == -signal.SIGPIPE, (r.returncode, r.stderr)
    assert r.stderr == ""
    # The server, whose clients may go at any time, keeps SIGPIPE ignored.
    ignored = int(next(l for l in open(f"/proc/{server.proc.pid}/status") if l.startswith("SigIgn:")).split()[1], 16)
    assert ignored & (1 << (signal.SIGPIPE - 1))
