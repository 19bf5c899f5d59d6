"""What AWS's managed runtimes contain, Nimbus's contain: checked from inside
functions written for AWS, on a real server (namespace sandbox), with boto3.

The SDKs (boto3, the SDK for JavaScript v3) come from the server's SDK cache,
shared by the suite's servers (NIMBUS_SDK_DIR, set by conftest): tests that need them wait
for the server to say they are ready."""

import base64
import json
import re

import boto3
import pytest
from botocore.config import Config

from conftest import REGION, ROLE, make_zip, unique_name, wait_for

# AWS's "Defined runtime environment variables" of a Zip function of a
# managed runtime, plus AWS_ENDPOINT_URL (which points the SDKs at Nimbus)
# and the language's module path.
AWS_VARIABLES = {
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "TZ", "LANG", "PATH", "LD_LIBRARY_PATH",
    "AWS_XRAY_CONTEXT_MISSING", "AWS_XRAY_DAEMON_ADDRESS", "_AWS_XRAY_DAEMON_ADDRESS", "_AWS_XRAY_DAEMON_PORT",
    "AWS_LAMBDA_LOG_FORMAT", "AWS_ENDPOINT_URL",
}

PY_PROBE = '''
import json, logging, os, resource, subprocess, sys

logger = logging.getLogger()
if os.environ["AWS_LAMBDA_LOG_FORMAT"] == "Text":  # JSON: AWS_LAMBDA_LOG_LEVEL sets it
    logger.setLevel(logging.INFO)

def env(event, context):
    with open("/proc/self/environ", "rb") as f:
        initial = [v.split(b"=", 1)[0].decode() for v in f.read().split(b"\\0") if v]
    return {"names": sorted(os.environ), "initial": initial, "level": os.environ.get("AWS_LAMBDA_LOG_LEVEL"),
            "format": os.environ.get("AWS_LAMBDA_LOG_FORMAT"), "wrapped": os.environ.get("WRAPPED")}

def limits(event, context):
    sh = subprocess.run(["/bin/sh", "-c", "echo $BASH_VERSION"], capture_output=True, text=True)
    return {"nofile": resource.getrlimit(resource.RLIMIT_NOFILE), "bash": sh.stdout.strip()}

def logs(event, context):
    print("printed line")
    logger.info("info line")
    logger.debug("debug line")
    logging.warning("warning line")
    logger.error("error with extra", extra={"order": 7})
    return context.aws_request_id

def context_objects(event, context):
    cc, identity = context.client_context, context.identity
    client = cc and cc.client
    return {"custom": cc and cc.custom, "env": cc and cc.env,
            "app_title": client and client.app_title, "installation_id": client and client.installation_id,
            "has_client": client is not None, "is_none": cc is None,
            "identity": [identity.cognito_identity_id, identity.cognito_identity_pool_id]}

def sdk(event, context):
    import boto3, botocore
    # Its own configuration, whatever else the node holds (a list's first page may not show it).
    me = boto3.client("lambda").get_function(FunctionName=context.function_name)["Configuration"]
    return {"boto3": boto3.__version__, "botocore": botocore.__version__, "file": boto3.__file__,
            "path": sys.path, "mine": me["FunctionName"] == context.function_name}

def layers(event, context):
    import layer_flat, layer_site
    return [layer_flat.WHERE, layer_site.WHERE]
'''

NODE_ESM = '''
import { LambdaClient, GetFunctionCommand } from "@aws-sdk/client-lambda";
import { S3Client } from "@aws-sdk/client-s3";
import { DynamoDBDocumentClient } from "@aws-sdk/lib-dynamodb";
import { createRequire } from "node:module";

export const handler = async (event, context) => {
  const out = await new LambdaClient({}).send(new GetFunctionCommand({ FunctionName: context.functionName }));
  return { mine: out.Configuration.FunctionName === context.functionName,
           s3: typeof S3Client, doc: typeof DynamoDBDocumentClient };
};

export const layers = async () => {
  const a = await import("layer-flat");
  const b = await import("layer-versioned");
  return [a.default.WHERE, b.default.WHERE];
};

export const where = async () => {
  const m = await import("@aws-sdk/client-sqs");
  return { esm: import.meta.resolve("@aws-sdk/client-sqs"),
           cjs: createRequire(import.meta.url).resolve("@aws-sdk/client-sqs"),
           marker: m.NIMBUS_LAYER ?? m.default?.NIMBUS_LAYER ?? null };
};
'''

NODE_CJS = '''
const { LambdaClient, GetFunctionCommand } = require("@aws-sdk/client-lambda");
const { SQSClient } = require("@aws-sdk/client-sqs");
const { DynamoDBClient } = require("@aws-sdk/client-dynamodb");

exports.handler = async (event, context) => {
  const out = await new LambdaClient({}).send(new GetFunctionCommand({ FunctionName: context.functionName }));
  return { mine: out.Configuration.FunctionName === context.functionName,
           sqs: typeof SQSClient, ddb: typeof DynamoDBClient };
};

exports.layers = async () => [require("layer-flat").WHERE, require("layer-versioned").WHERE];

exports.where = async () => ({ cjs: require.resolve("@aws-sdk/client-sqs"),
                               marker: require("@aws-sdk/client-sqs").NIMBUS_LAYER ?? null });

exports.env = async () => ({ names: Object.keys(process.env).sort(), wrapped: process.env.WRAPPED || null });

exports.zone = async () => ({ zone: Intl.DateTimeFormat().resolvedOptions().timeZone,
                              offset: new Date(Date.UTC(2026, 6, 1)).getTimezoneOffset() });

exports.logs = async () => {
  console.log("log line");
  console.debug("debug line");
  console.warn("warn line");
  return "ok";
};
'''

# CommonJS that imports: its bare specifiers resolve in NODE_PATH too.
NODE_CJS_IMPORT = '''
exports.layers = async () => [(await import("layer-flat")).default.WHERE,
                              (await import("layer-versioned")).default.WHERE];
'''


# Every Node.js probe module imports the SDK at its top.
@pytest.fixture(scope="module", autouse=True)
def sdks(server):
    server.wait_sdk("python")
    server.wait_sdk("nodejs")


@pytest.fixture(scope="module")
def logs(server):
    key, secret = server.credentials()
    return boto3.client("logs", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))


def function(lam, runtime, handler, files, **kw):
    name = unique_name("rt")
    lam.create_function(FunctionName=name, Runtime=runtime, Handler=handler, Role=ROLE,
                        Code={"ZipFile": make_zip(files)}, Timeout=30, MemorySize=512, **kw)
    return name


def python(lam, handler, **kw):
    return function(lam, "python3.11", f"app.{handler}", {"app.py": PY_PROBE}, **kw)


def node(lam, handler, module="index.mjs", **kw):
    return function(lam, "nodejs20.x", f"{module.split('.')[0]}.{handler}", {"index.mjs": NODE_ESM, "cjs.js": NODE_CJS, "dyn.js": NODE_CJS_IMPORT},
                    **kw)


def call(lam, name, **kw):
    r = lam.invoke(FunctionName=name, **kw)
    out = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, out
    return r, out


def events_of(logs, name, request_id, count):
    """The function's log events once `count` of them mention the request."""
    def found():
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        except logs.exceptions.ResourceNotFoundException:
            return None  # the group appears with the function's first stored line
        mine = [e["message"] for e in events if request_id in e["message"] or "\t" not in e["message"]]
        return mine if len([m for m in mine if request_id in m]) >= count else None
    return wait_for(found, f"{count} log events of {request_id}")


def test_python_log_handler_writes_aws_text_lines(lam, logs):
    name = python(lam, "logs")
    r, rid = call(lam, name, LogType="Tail")
    messages = events_of(logs, name, rid, 5)
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert "printed line\n" in messages, messages
    assert any(re.fullmatch(rf"\[INFO\]\t{stamp}\t{rid}\tinfo line\n", m) for m in messages), messages
    assert any(re.fullmatch(rf"\[WARNING\]\t{stamp}\t{rid}\twarning line\n", m) for m in messages), messages
    assert any(re.fullmatch(rf"\[ERROR\]\t{stamp}\t{rid}\terror with extra\n", m) for m in messages), messages
    assert not any("debug line" in m for m in messages), "below the root logger's level"
    tail = base64.b64decode(r["LogResult"]).decode()
    assert "\nprinted line\n[INFO]" in tail, "one newline per line in the tail too"


RAW_JSON = """
import json, sys

def handler(event, context):
    print(json.dumps({"level": "debug", "msg": "raw-debug"}))
    print(json.dumps({"level": "ERROR", "msg": "raw-error"}))
    sys.stderr.write(json.dumps({"level": "info", "msg": "raw-info"}) + "\\n")
    print("plain text")
    return context.aws_request_id
"""


def test_json_lines_of_any_writer_are_filtered_at_the_application_level(lam, logs):
    """Lambda reads the `level` of every JSON object a function writes (a
    library's own logger, pino, structlog), not only its runtime's logger's."""
    config = {"LogFormat": "JSON", "ApplicationLogLevel": "WARN"}
    name = function(lam, "python3.11", "app.handler", {"app.py": RAW_JSON}, LoggingConfig=config)
    _, rid = call(lam, name)
    messages = events_of(logs, name, rid, 3)
    raw = [json.loads(m)["msg"] for m in messages if m.startswith("{") and "msg" in m]
    assert raw == ["raw-error"], messages
    assert "plain text\n" in messages, messages


def test_json_logging_config_is_stored_and_honoured_by_both_runtimes(lam, logs):
    config = {"LogFormat": "JSON", "ApplicationLogLevel": "WARN", "SystemLogLevel": "INFO"}
    name = python(lam, "logs", LoggingConfig=config)
    stored = lam.get_function_configuration(FunctionName=name)["LoggingConfig"]
    assert {k: stored[k] for k in config} == config
    _, rid = call(lam, name)
    messages = events_of(logs, name, rid, 5)
    records = [json.loads(m) for m in messages if m.startswith("{")]
    app = [r for r in records if "level" in r]
    # Python names levels its own way, as AWS's runtime does (WARNING).
    assert [(r["level"], r["message"]) for r in app] == [("WARNING", "warning line"), ("ERROR", "error with extra")]
    # AWS's Python runtime stamps its JSON records in whole seconds.
    assert all(r["requestId"] == rid and r["logger"] == "root" and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["timestamp"]) for r in app), app
    assert app[1]["order"] == 7, "extra fields are kept"
    assert "printed line\n" in messages, "print output stays text"
    platform = {r["type"]: r["record"] for r in records if "type" in r}
    assert platform["platform.start"] == {"requestId": rid, "version": "$LATEST"}
    assert platform["platform.runtimeDone"]["status"] == "success"
    assert set(platform["platform.runtimeDone"]["metrics"]) == {"durationMs", "producedBytes"}
    report = platform["platform.report"]
    assert report["requestId"] == rid and report["status"] == "success"
    assert {"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB", "initDurationMs"} <= set(report["metrics"])
    assert report["metrics"]["memorySizeMB"] == 512

    lam.update_function_configuration(FunctionName=name, Handler="app.env")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    env = call(lam, name)[1]
    assert (env["format"], env["level"]) == ("JSON", "WARN")

    # Node.js, set by UpdateFunctionConfiguration: DEBUG lets console.debug
    # through; the platform's records are INFO, below a WARN system level.
    name = node(lam, "logs", module="cjs.js")
    lam.update_function_configuration(FunctionName=name, LoggingConfig={
        "LogFormat": "JSON", "ApplicationLogLevel": "DEBUG", "SystemLogLevel": "WARN"})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    r, _ = call(lam, name)
    rid = r["ResponseMetadata"]["RequestId"]
    records = [json.loads(m) for m in events_of(logs, name, rid, 3)]
    assert [(x["level"], x["message"]) for x in records] == [
        ("INFO", "log line"), ("DEBUG", "debug line"), ("WARN", "warn line")], records
    assert all(x["requestId"] == rid for x in records) and not any("type" in x for x in records)


def test_context_client_context_and_identity_are_objects(lam):
    name = python(lam, "context_objects")
    cc = {"custom": {"k": "v"}, "env": {"locale": "en"}, "client": {"app_title": "Nimbus app"}}
    _, out = call(lam, name, ClientContext=base64.b64encode(json.dumps(cc).encode()).decode())
    assert (out["custom"], out["env"], out["app_title"]) == ({"k": "v"}, {"locale": "en"}, "Nimbus app")
    assert out["installation_id"] is None and out["identity"] == [None, None]
    _, out = call(lam, name)
    assert out["is_none"] and out["identity"] == [None, None]


def test_boto3_is_importable_and_calls_back_into_nimbus(lam):
    name = python(lam, "sdk")
    _, out = call(lam, name)
    assert (out["boto3"], out["botocore"]) == ("1.44.8", "1.44.8")
    assert out["file"].startswith("/var/lang/lib/python3.11/site-packages/"), out["file"]
    assert out["mine"], "get_function from inside reaches Nimbus as the function"
    assert not any("dist-packages" in p for p in out["path"]), out["path"]
    assert out["path"][:3] == ["/var/task", "/opt/python/lib/python3.11/site-packages", "/opt/python"]


@pytest.mark.parametrize("module", ["index.mjs", "cjs.js"])
def test_sdk_for_javascript_imports_from_esm_and_commonjs(lam, module):
    _, out = call(lam, node(lam, "handler", module=module))
    assert out.pop("mine"), "GetFunction from inside reaches Nimbus as the function"
    assert set(out.values()) == {"function"}, out


def test_node_finds_the_sdk_where_aws_has_it_and_a_layers_package_first(lam):
    out = call(lam, node(lam, "where"))[1]
    assert out["esm"].startswith("file:///var/runtime/node_modules/@aws-sdk/client-sqs/"), out
    assert out["cjs"].startswith("/var/runtime/node_modules/@aws-sdk/client-sqs/"), out
    assert out["marker"] is None
    assert call(lam, node(lam, "where", module="cjs.js"))[1]["marker"] is None
    # A layer's package of the SDK's name (a newer SDK, say) comes first.
    package = "nodejs/node_modules/@aws-sdk/client-sqs/"
    layer = make_zip({package + "package.json": '{"name": "@aws-sdk/client-sqs", "main": "index.js"}',
                      package + "index.js": "exports.NIMBUS_LAYER = 'layer';\n"})
    arn = lam.publish_layer_version(LayerName=unique_name("sdk"), Content={"ZipFile": layer})["LayerVersionArn"]
    for module in ["index.mjs", "cjs.js"]:
        out = call(lam, node(lam, "where", module=module, Layers=[arn]))[1]
        assert out["marker"] == "layer", (module, out)
        assert out["cjs"] == "/opt/" + package + "index.js", (module, out)


def test_layer_paths_of_both_runtimes(lam):
    layer = make_zip({
        "python/layer_flat.py": "WHERE = 'python'\n",
        "python/lib/python3.11/site-packages/layer_site.py": "WHERE = 'site-packages'\n",
        "nodejs/node_modules/layer-flat/index.js": "module.exports = { WHERE: 'node_modules' };\n",
        "nodejs/node20/node_modules/layer-versioned/index.js": "module.exports = { WHERE: 'node20' };\n",
    })
    arn = lam.publish_layer_version(LayerName=unique_name("paths"), Content={"ZipFile": layer})["LayerVersionArn"]
    assert call(lam, python(lam, "layers", Layers=[arn]))[1] == ["python", "site-packages"]
    for module in ["cjs.js", "index.mjs", "dyn.js"]:
        assert call(lam, node(lam, "layers", module=module, Layers=[arn]))[1] == ["node_modules", "node20"], module


def test_environment_is_aws_list_only(lam):
    own = {"Variables": {"MY_SETTING": "1"}}
    out = call(lam, python(lam, "env", Environment=own))[1]
    assert set(out["names"]) == AWS_VARIABLES | {"PYTHONPATH", "MY_SETTING"}, out["names"]
    assert not [n for n in out["initial"] if n.startswith("NIMBUS")], out["initial"]
    assert out["level"] is None and out["format"] == "Text"
    out = call(lam, node(lam, "env", module="cjs.js", Environment=own))[1]
    assert set(out["names"]) == AWS_VARIABLES | {"NODE_PATH", "MY_SETTING"}, out["names"]


def test_node_runs_in_utc(lam):
    # TZ is reserved: a function cannot change it.
    assert call(lam, node(lam, "zone", module="cjs.js"))[1] == {"zone": "UTC", "offset": 0}


def test_resource_limits_and_shell_are_amazon_linux_ones(lam):
    out = call(lam, python(lam, "limits"))[1]
    assert out["nofile"] == [1024, 1024]
    assert out["bash"], "/bin/sh is bash"


def test_exec_wrapper_from_a_layer_starts_the_runtime(lam):
    wrapper = "#!/bin/bash\nexport WRAPPED=\"$(basename \"$1\")\"\nexec \"$@\"\n"
    layer = make_zip({"wrapper": wrapper}, executables=("wrapper",))
    arn = lam.publish_layer_version(LayerName=unique_name("wrap"), Content={"ZipFile": layer})["LayerVersionArn"]
    env = {"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper"}}
    out = call(lam, python(lam, "env", Layers=[arn], Environment=env))[1]
    assert out["wrapped"].startswith("python3"), "the wrapper ran the interpreter"
    out = call(lam, node(lam, "env", module="cjs.js", Layers=[arn], Environment=env))[1]
    assert out["wrapped"] == "node"


PY_ODD = """
import decimal, logging

def decimals(event, context):
    return {"price": decimal.Decimal("12.50"), "count": decimal.Decimal("10")}

def raw(event, context):
    return b'{"raw": true}'

def paths(event, context):
    import os, sys
    # Layers' directories are on the path whether there are layers or not, as on AWS.
    return {"argv": sys.argv, "missing": [p for p in sys.path if not os.path.exists(p) and not p.startswith("/opt/")
                                          and not p.endswith(".zip")]}

def multiline(event, context):
    logging.getLogger().warning("first\\nsecond")
    raise ValueError("bad\\nvalue")

def unended(event, context):
    logging.getLogger().warning({"order": 1})
    context.log("from context.log")
    print("printed without a newline", end="")
    return "done"
"""

NODE_ODD = """
exports.both = async (event, context, callback) => { callback(null, "from the callback"); return "from the promise"; };
exports.nested = { fn: async () => "nested" };
exports.floating = async (event) => {
  if (event.reject) Promise.reject(new Error("floating"));
  if (event.throwLater) setTimeout(() => { throw new TypeError("async boom"); }, 0);
  await new Promise((resolve) => setTimeout(resolve, 200));
  return globalThis.seen = (globalThis.seen || 0) + 1;
};
exports.circular = async () => { const a = {}; a.self = a; return a; };
exports.duck = async () => { throw { name: "CustomErr", message: "duck", stack: "CustomErr: duck" }; };
exports.lines = async () => { console.log("one\\ntwo"); return "ok"; };
exports.coded = async () => { throw Object.assign(new Error("no such key"), { code: "E_KEY", key: "k1" }); };
"""


def failed(lam, name, payload=b"{}"):
    r = lam.invoke(FunctionName=name, Payload=payload)
    assert r.get("FunctionError") == "Unhandled", r
    return json.loads(r["Payload"].read())


def test_what_aws_python_runtime_makes_of_results_and_output(lam, logs):
    files = {"app.py": PY_ODD, "bad.py": "def handler(:\n    pass\n"}
    name = function(lam, "python3.11", "app.decimals", files)
    # DynamoDB's numbers are Decimals.
    assert call(lam, name)[1] == {"price": 12.5, "count": 10}
    name = function(lam, "python3.11", "app.raw", files)
    assert lam.invoke(FunctionName=name)["Payload"].read() == b'{"raw": true}'
    # Output without a newline is the invocation's own, and context.log one event a call.
    name = function(lam, "python3.11", "app.unended", files,
                    LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "INFO"})
    r, _ = call(lam, name, LogType="Tail")
    tail = base64.b64decode(r["LogResult"]).decode()
    assert "from context.log\nprinted without a newline" in tail, tail
    record = next(json.loads(line) for line in tail.splitlines() if '"WARNING"' in line)
    assert record["message"] == {"order": 1}, "a dict message stays an object"
    # A record of several lines is one log event with its newlines, as AWS's runtime stores it.
    r = lam.invoke(FunctionName=function(lam, "python3.11", "app.multiline", files), LogType="Tail")
    tail = base64.b64decode(r["LogResult"]).decode()
    assert "\r" not in tail and "\tfirst\nsecond\n" in tail and "[ERROR] ValueError: bad\nvalue\nTraceback" in tail, tail
    # Only the sandbox's paths: none of the host's (the zygote's directory).
    paths = call(lam, function(lam, "python3.11", "app.paths", files))[1]
    assert paths == {"argv": ["/var/runtime/bootstrap.py"], "missing": []}, paths
    name = function(lam, "python3.11", "bad.handler", files)
    error = failed(lam, name)
    assert error["errorType"] == "Runtime.UserCodeSyntaxError"
    assert len(error["stackTrace"]) == 1 and 'bad.py" Line 1' in error["stackTrace"][0], error


def test_what_aws_node_runtime_makes_of_handlers_and_failures(lam):
    files = {"app.js": NODE_ODD, "esm.mjs": "export default { handler: async () => 1 };\n",
             "boom.js": "throw new Error('config missing');\n"}
    name = function(lam, "nodejs20.x", "app.both", files)
    assert call(lam, name)[1] == "from the callback", "the first completion counts"
    assert call(lam, function(lam, "nodejs20.x", "app.nested.fn", files))[1] == "nested"

    name = function(lam, "nodejs20.x", "app.floating", files)
    assert call(lam, name)[1] == 1
    error = failed(lam, name, b'{"reject": true}')
    assert (error["errorType"], error["errorMessage"]) == ("Runtime.UnhandledPromiseRejection", "Error: floating")
    error = failed(lam, name, b'{"throwLater": true}')
    assert (error["errorType"], error["errorMessage"]) == ("TypeError", "async boom")
    assert call(lam, name)[1] == 1, "the runtime that failed was replaced"

    error = failed(lam, function(lam, "nodejs20.x", "app.circular", files))
    assert (error["errorType"], error["errorMessage"]) == ("Error", "Unable to stringify response body")
    error = failed(lam, function(lam, "nodejs20.x", "app.duck", files))
    assert (error["errorType"], error["errorMessage"]) == ("CustomErr", "duck")
    r = lam.invoke(FunctionName=function(lam, "nodejs20.x", "app.coded", files), LogType="Tail")
    line = next(l for l in base64.b64decode(r["LogResult"]).decode().splitlines() if "Invoke Error" in l)
    logged = json.loads(line.split("Invoke Error \t", 1)[1])
    assert (logged["errorType"], logged["code"], logged["key"]) == ("Error", "E_KEY", "k1"), logged
    assert logged["stack"][0] == "Error: no such key", logged
    r = lam.invoke(FunctionName=function(lam, "nodejs20.x", "app.lines", files), LogType="Tail")
    tail = base64.b64decode(r["LogResult"]).decode()
    assert "\r" not in tail and "\tINFO\tone\ntwo\n" in tail, tail
    error = failed(lam, function(lam, "nodejs20.x", "esm.handler", files))
    assert (error["errorType"], error["errorMessage"]) == ("Runtime.HandlerNotFound", "esm.handler is undefined or not exported")
    error = failed(lam, function(lam, "nodejs20.x", "boom.handler", files))
    assert (error["errorType"], error["errorMessage"]) == ("Error", "config missing")
    error = failed(lam, function(lam, "nodejs20.x", "../task/app.both", files))
    assert error["errorType"] == "Runtime.MalformedHandlerName"
