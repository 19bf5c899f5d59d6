"""Nimbus managed runtime for Python: a Lambda Runtime API client.

Loads the handler named by _HANDLER from LAMBDA_TASK_ROOT (and layers under
/opt/python), then serves invocations from AWS_LAMBDA_RUNTIME_API until the
environment is reclaimed. Errors are reported in AWS's shapes.

As on AWS: the module path is the code, the layers, PYTHONPATH, the standard
library and then the runtime's SDK (boto3), never the host's site-packages
(the interpreter runs with -I -S); the root logger writes AWS's lines, as
text or, under AWS_LAMBDA_LOG_FORMAT=JSON, as JSON, at AWS_LAMBDA_LOG_LEVEL;
the context's client_context and identity are objects.

Started ahead of its function (its stdin is then the worker's socket), it
first waits for one JSON line there carrying the function's whole
environment, then talks to the worker over that same socket in frames (the
worker's channel.rs) rather than over HTTP."""

import importlib
import json
import logging
import os
import site
import socket
import stat
import sys
import time
import traceback

PREFIX = "/2018-06-01/runtime"
REQUEST_ID = None


def specialize():
    """Waits for the function; returns the worker's channel (None when not started ahead)."""
    if not stat.S_ISSOCK(os.fstat(0).st_mode):
        return None
    launch = json.loads(sys.stdin.buffer.readline())
    os.environ.clear()
    os.environ.update(dict(launch["env"]))
    time.tzset()
    # The channel moves off stdin (not inherited), so the function's own reads never see it.
    channel = Channel(os.dup(0))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir(os.environ["LAMBDA_TASK_ROOT"])
    return channel


def set_module_path():
    """AWS's order: code, layers, PYTHONPATH, standard library, the runtime's SDK."""
    version = "python%d.%d" % sys.version_info[:2]
    front = [os.environ.get("LAMBDA_TASK_ROOT", "."), f"/opt/python/lib/{version}/site-packages", "/opt/python"]
    front += [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    # In a sandbox the SDK is mounted where AWS keeps site-packages; a plain
    # process finds it through the runtime directory.
    sdk = [d for d in (f"/var/lang/lib/{version}/site-packages",
                       os.path.join(os.environ.get("LAMBDA_RUNTIME_DIR", ""), "python")) if os.path.isdir(d)]
    # The runtime's own directory is the host's when a zygote outside the
    # sandbox imported it: the function sees the sandbox's names only.
    runtime_dir = os.environ.get("LAMBDA_RUNTIME_DIR") or os.path.dirname(os.path.abspath(__file__))
    own = os.path.dirname(os.path.abspath(__file__))
    path = []
    for p in front + sys.path + sdk[:1]:
        if p not in path and (p != own or own == runtime_dir):
            path.append(p)
    sys.path[:] = path
    sys.argv[:] = [os.path.join(runtime_dir, "bootstrap.py")]


class RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = REQUEST_ID or ""
        return True


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
                         "%Y-%m-%dT%H:%M:%S")
        self.converter = time.gmtime


# AWS's JSON log records' time: whole seconds.
TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"

# LogRecord attributes that are not a record's own extra fields.
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"aws_request_id", "message", "asctime"}


class JsonFormatter(logging.Formatter):
    """AWS's JSON log lines: timestamp, level, message, logger, requestId,
    the exception's fields when there is one, and the record's extras."""

    def format(self, record):
        level = min(50, max(0, record.levelno)) // 10 * 10
        line = {
            "timestamp": time.strftime(TIMESTAMP, time.gmtime(record.created)),
            "level": logging.getLevelName(level),
            # A dict stays an object, as AWS's runtime keeps it.
            "message": record.msg if isinstance(record.msg, dict) and not record.args else record.getMessage(),
            "logger": record.name,
            "requestId": getattr(record, "aws_request_id", None),
        }
        if record.exc_info:
            line["stackTrace"] = traceback.format_tb(record.exc_info[2])
            line["errorType"] = record.exc_info[0].__name__
            line["errorMessage"] = str(record.exc_info[1])
            line["location"] = f"{record.pathname}:{record.funcName}:{record.lineno}"
        line.update((k, v) for k, v in vars(record).items() if k not in _RECORD_FIELDS and k not in line)
        return json.dumps({k: v for k, v in line.items() if v is not None}, ensure_ascii=False, default=str)


def record_line(text):
    """One log record as one line of output: a record of several lines is
    opened with the worker's record mark (\\x1e) and its newlines written
    as \\r; the worker stores it with its newlines, one log event."""
    return "\x1e" + text.replace("\n", "\r") + "\n" if "\n" in text else text + "\n"


class StdoutHandler(logging.Handler):
    """One log event per record."""

    def emit(self, record):
        try:
            sys.stdout.write(record_line(self.format(record)))
        except Exception:  # noqa: BLE001 - logging must never fail the function
            self.handleError(record)


JSON_LOGS = False


def setup_logging():
    global JSON_LOGS
    JSON_LOGS = os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON"
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter() if JSON_LOGS else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = {"TRACE": "DEBUG"}.get(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper(),
                                    os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper())
    if level and isinstance(logging.getLevelName(level), int):
        root.setLevel(level)


def log_error(error):
    """An invocation's or init's error in the log, as AWS's runtime writes it."""
    if JSON_LOGS:
        line = {"timestamp": time.strftime(TIMESTAMP, time.gmtime()), "level": "ERROR", **error}
        sys.stdout.write(json.dumps(line) + "\n")
        return
    lines = ["[ERROR] " + ": ".join(part for part in (error.get("errorType"), error.get("errorMessage")) if part)]
    if error.get("stackTrace") is not None:
        lines.append("Traceback (most recent call last):")
        for frame in error["stackTrace"]:
            for line in frame.splitlines():
                indent = len(line) - len(line.lstrip(" "))
                lines.append("\u00a0" * indent + line[indent:])
    sys.stdout.write(record_line("\n".join(lines)))


# Below poll()'s largest timeout (2**31 - 1 ms).
IDLE_WAIT_S = 86400


class Channel:
    """The Runtime API's calls as frames on the worker's socket."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        # With a timeout, each read polls for input before it reads. A
        # blocking read would also be woken, for nothing, each time the
        # worker reads what this runtime sent (the socket's one wait queue
        # serves both directions): a wasted wake-up every invoke. The
        # timeout itself never matters; an idle wait that outlives it waits again.
        self.sock.settimeout(IDLE_WAIT_S)
        self.reader = self.sock.makefile("rb")
        # Whether `next` went with the last response or error: the loop
        # always asks for the next invocation right after one, and one write
        # for both saves a system call here and a wake-up of the worker.
        self.asked = False

    def call(self, method, path, body=None, headers=None):
        if path == "/invocation/next":
            if not self.asked:
                self.sock.sendall(b"next\n")
            self.asked = False
            while True:
                try:
                    header = self.reader.readline()
                    break
                except TimeoutError:
                    continue
            _, meta_len, payload_len = header.split()
            meta = json.loads(self.reader.read(int(meta_len)))
            return Headers(meta), self.reader.read(int(payload_len))
        data = body.encode() if isinstance(body, str) else (body or b"")
        if path == "/init/error":
            self.sock.sendall(b"init_error %d\n" % len(data) + data)
            self.reader.readline()  # the worker's "ok": the error is in before this runtime exits
            return None, b""
        _, _, request_id, kind = path.split("/")
        self.sock.sendall(b"%s %s %d\n" % (kind.encode(), request_id.encode(), len(data)) + data + b"next\n")
        self.asked = True
        return None, b""


class Headers:
    def __init__(self, meta):
        self.meta = meta

    def getheaders(self):
        return list(self.meta.items())


class HttpClient:
    """The HTTP Runtime API, when not started ahead (http.client costs about
    3.5 MB per environment, so only this path imports it)."""

    def __init__(self):
        import http.client

        self.conn = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])

    def call(self, method, path, body=None, headers=None):
        self.conn.request(method, PREFIX + path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        return resp, resp.read()


def error_body(exc, error_type=None, message=None):
    tb = traceback.extract_tb(exc.__traceback__) if exc is not None else []
    # The trace starts in the function's code, not in this runtime.
    while tb and tb[0].filename == __file__:
        tb = tb[1:]
    return json.dumps({
        "errorMessage": message if message is not None else str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": "",
        "stackTrace": traceback.format_list(tb),
    })


def load_handler(client):
    handler = os.environ.get("_HANDLER", "")
    module_name, _, function_name = handler.rpartition(".")
    if not module_name or not function_name:
        return init_error(client, None, "Runtime.MalformedHandlerName",
                          f"Bad handler '{handler}': not enough values to unpack (expected 2, got 1)")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except SyntaxError as e:
        # AWS's runtime reports where the error is, not importlib's frames.
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        return init_error(client, None, "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {e}",
                          trace)
    except ImportError as e:
        # AWS's runtime reports no stack for this one: its frames would be importlib's.
        return init_error(client, None, "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {e}")
    except Exception as e:  # noqa: BLE001 - any failure in module code is the user's init error
        return init_error(client, e, None, None)
    fn = getattr(module, function_name, None)
    if fn is None:
        return init_error(client, None, "Runtime.HandlerNotFound",
                          f"Handler '{function_name}' missing on module '{module_name}'")
    return fn


def init_error(client, exc, error_type, message, trace=None):
    body = error_body(exc, error_type, message)
    if trace is not None:
        body = json.dumps(dict(json.loads(body), stackTrace=trace))
    log_error(json.loads(body))
    client.call("POST", "/init/error", body, {"Lambda-Runtime-Function-Error-Type": json.loads(body)["errorType"]})
    sys.exit(1)


class Client:
    """The mobile client of a ClientContext (`context.client_context.client`)."""
    __slots__ = ["installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name"]


class ClientContext:
    __slots__ = ["custom", "env", "client"]


class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]


def from_dict(cls, values):
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, values.get(field))
    return obj


class Context:
    def __init__(self, headers):
        self.aws_request_id = headers.get("lambda-runtime-aws-request-id")
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn")
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0"))
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        cc = headers.get("lambda-runtime-client-context")
        self.client_context = None
        if cc:
            self.client_context = from_dict(ClientContext, json.loads(cc))
            if self.client_context.client is not None:
                self.client_context.client = from_dict(Client, self.client_context.client)
        identity = headers.get("lambda-runtime-cognito-identity")
        ids = json.loads(identity) if identity else {}
        self.identity = CognitoIdentity()
        self.identity.cognito_identity_id = ids.get("cognitoIdentityId")
        self.identity.cognito_identity_pool_id = ids.get("cognitoIdentityPoolId")

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, msg):
        # One log event a call, as AWS's runtime writes it.
        text = str(msg)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def decimal_number(value):
    """A `Decimal` (DynamoDB's numbers) as a JSON number, as AWS's runtime
    answers it: an integral one exactly, any other as the nearest float."""
    import decimal

    if isinstance(value, decimal.Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def main():
    global REQUEST_ID
    client = specialize() or HttpClient()
    set_module_path()
    # What `site` would have added (it is off, to keep the host's packages out).
    site.setquit()
    site.sethelper()
    setup_logging()
    handler = load_handler(client)
    while True:
        resp, body = client.call("GET", "/invocation/next")
        headers = {k.lower(): v for k, v in resp.getheaders()}
        request_id = REQUEST_ID = headers["lambda-runtime-aws-request-id"]
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("lambda-runtime-trace-id", "")
        try:
            event = json.loads(body)
        except ValueError as e:
            client.call("POST", f"/invocation/{request_id}/error",
                        error_body(e, "Runtime.UnmarshalError", f"Unable to unmarshal input: {e}"),
                        {"Lambda-Runtime-Function-Error-Type": "Runtime.UnmarshalError"})
            continue
        try:
            result = handler(event, Context(headers))
        except Exception as e:  # noqa: BLE001 - reported to the caller as the function's error
            payload = json.loads(error_body(e))
            payload["requestId"] = request_id
            log_error(payload)
            client.call("POST", f"/invocation/{request_id}/error", json.dumps(payload),
                        {"Lambda-Runtime-Function-Error-Type": "Unhandled"})
            continue
        if isinstance(result, bytes):
            # As AWS's runtime: bytes are the response as they are.
            client.call("POST", f"/invocation/{request_id}/response", result)
            continue
        try:
            out = json.dumps(result, default=decimal_number)
        except (TypeError, ValueError) as e:
            payload = json.loads(error_body(None, "Runtime.MarshalError", f"Unable to marshal response: {e}"))
            payload["requestId"] = request_id
            log_error(payload)
            client.call("POST", f"/invocation/{request_id}/error", json.dumps(payload),
                        {"Lambda-Runtime-Function-Error-Type": "Runtime.MarshalError"})
            continue
        client.call("POST", f"/invocation/{request_id}/response", out)


if __name__ == "__main__":
    main()
