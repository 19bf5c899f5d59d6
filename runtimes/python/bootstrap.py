"""Nimbus managed runtime for Python: a Lambda Runtime API client.

Loads the handler named by _HANDLER from LAMBDA_TASK_ROOT (and layers under
/opt/python), then serves invocations from AWS_LAMBDA_RUNTIME_API until the
environment is reclaimed. Errors are reported in AWS's shapes.

Started ahead of its function (NIMBUS_SPECIALIZE set), it first waits for one
JSON line on stdin carrying the function's whole environment, then talks to
the worker over that same socket in frames (the worker's channel.rs) rather
than over HTTP."""

import importlib
import json
import os
import socket
import sys
import time
import traceback

PREFIX = "/2018-06-01/runtime"


def specialize():
    """Waits for the function; returns the worker's channel (None when not started ahead)."""
    if not os.environ.get("NIMBUS_SPECIALIZE"):
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


class Channel:
    """The Runtime API's calls as frames on the worker's socket."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.reader = self.sock.makefile("rb")

    def call(self, method, path, body=None, headers=None):
        if path == "/invocation/next":
            self.sock.sendall(b"next\n")
            _, meta_len, payload_len = self.reader.readline().split()
            meta = json.loads(self.reader.read(int(meta_len)))
            return Headers(meta), self.reader.read(int(payload_len))
        data = body.encode() if isinstance(body, str) else (body or b"")
        if path == "/init/error":
            self.sock.sendall(b"init_error %d\n" % len(data) + data)
            self.reader.readline()  # the worker's "ok": the error is in before this runtime exits
            return None, b""
        _, _, request_id, kind = path.split("/")
        self.sock.sendall(b"%s %s %d\n" % (kind.encode(), request_id.encode(), len(data)) + data)
        return None, b""


class Headers:
    def __init__(self, meta):
        self.meta = meta

    def getheaders(self):
        return list(self.meta.items())


class Client:
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
    return json.dumps({
        "errorMessage": message if message is not None else str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": "",
        "stackTrace": traceback.format_list(tb),
    })


def load_handler(client):
    handler = os.environ.get("_HANDLER", "")
    for path in ("/opt/python", os.environ.get("LAMBDA_TASK_ROOT", ".")):
        if path not in sys.path:
            sys.path.insert(0, path)
    module_name, _, function_name = handler.rpartition(".")
    if not module_name or not function_name:
        return init_error(client, None, "Runtime.MalformedHandlerName",
                          f"Bad handler '{handler}': not enough values to unpack (expected 2, got 1)")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except SyntaxError as e:
        return init_error(client, e, "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {e}")
    except ImportError as e:
        return init_error(client, e, "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {e}")
    except Exception as e:  # noqa: BLE001 - any failure in module code is the user's init error
        return init_error(client, e, None, None)
    fn = getattr(module, function_name, None)
    if fn is None:
        return init_error(client, None, "Runtime.HandlerNotFound",
                          f"Handler '{function_name}' missing on module '{module_name}'")
    return fn


def init_error(client, exc, error_type, message):
    body = error_body(exc, error_type, message)
    print(f"[ERROR] {json.loads(body)['errorType']}: {json.loads(body)['errorMessage']}", file=sys.stderr, flush=True)
    client.call("POST", "/init/error", body, {"Lambda-Runtime-Function-Error-Type": json.loads(body)["errorType"]})
    sys.exit(1)


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
        self.client_context = json.loads(cc) if cc else None
        self.identity = None

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))


def main():
    client = specialize() or Client()
    handler = load_handler(client)
    while True:
        resp, body = client.call("GET", "/invocation/next")
        headers = {k.lower(): v for k, v in resp.getheaders()}
        request_id = headers["lambda-runtime-aws-request-id"]
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
            print(f"[ERROR] {payload['errorType']}: {payload['errorMessage']}", file=sys.stderr, flush=True)
            client.call("POST", f"/invocation/{request_id}/error", json.dumps(payload),
                        {"Lambda-Runtime-Function-Error-Type": "Unhandled"})
            continue
        try:
            out = json.dumps(result)
        except (TypeError, ValueError) as e:
            client.call("POST", f"/invocation/{request_id}/error",
                        error_body(e, "Runtime.MarshalError", f"Unable to marshal response: {e}"),
                        {"Lambda-Runtime-Function-Error-Type": "Runtime.MarshalError"})
            continue
        client.call("POST", f"/invocation/{request_id}/response", out)


if __name__ == "__main__":
    main()
