"""Response streaming in Nimbus's Node.js runtime: `awslambda.streamifyResponse`
and `awslambda.HttpResponseStream.from`, seen through plain `Invoke`, which
returns a streamed response's bytes whole (as on AWS)."""

import json

import pytest

from conftest import REPO, ROLE, make_zip, unique_name

STREAMING = '''
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";

const tick = () => new Promise((resolve) => setTimeout(resolve, 20));

const cases = {
  async plain(stream) {
    stream.write("a");
    await tick();
    stream.write(Buffer.from("b"));
    stream.write({ n: 1 });
    try {
      stream.setContentType("text/plain");
    } catch (err) {
      stream.write(` ${err.name}`);
    }
    stream.end(" z");
  },
  async http(stream) {
    stream = awslambda.HttpResponseStream.from(stream, { statusCode: 201, headers: { "x-kind": "test" }, cookies: ["c=1"] });
    stream.write("body");
    await tick();
    stream.end(" more");
  },
  async pipeline(stream) {
    await pipeline(Readable.from(["x", "y", "z"]), stream);
  },
  async late(stream) {
    stream.write("partial");
    await tick();
    throw new TypeError("late failure");
  },
  async early() {
    throw new RangeError("early failure");
  },
  sync() {},
};

export const handler = awslambda.streamifyResponse((event, stream) => cases[event.case](stream));
'''


@pytest.fixture(scope="module")
def streamer(lam):
    name = unique_name("stream")
    lam.create_function(FunctionName=name, Runtime="nodejs20.x", Handler="index.handler", Role=ROLE,
                        Code={"ZipFile": make_zip({"index.mjs": STREAMING})}, Timeout=10)
    return name


def invoke(lam, name, case):
    r = lam.invoke(FunctionName=name, Payload=json.dumps({"case": case}))
    return r, r["Payload"].read()


def test_written_bytes_come_back_and_the_environment_serves_again(lam, streamer):
    for _ in range(2):
        r, body = invoke(lam, streamer, "plain")
        assert "FunctionError" not in r, body
        assert body == b'ab{"n":1} Runtime.InvalidStreamingOperation z'


def test_http_response_stream_prelude_then_eight_nuls(lam, streamer):
    r, body = invoke(lam, streamer, "http")
    assert "FunctionError" not in r, body
    prelude, _, rest = body.partition(b"\0" * 8)
    assert json.loads(prelude) == {"statusCode": 201, "headers": {"x-kind": "test"}, "cookies": ["c=1"]}
    assert rest == b"body more"


def test_pipeline_from_a_readable(lam, streamer):
    r, body = invoke(lam, streamer, "pipeline")
    assert "FunctionError" not in r, body
    assert body == b"xyz"


@pytest.mark.parametrize("case, error_type, message", [
    ("early", "RangeError", "early failure"),
    ("sync", "Error", "Streaming does not support non-async handlers."),
])
def test_error_before_any_byte_is_a_function_error(lam, streamer, case, error_type, message):
    r, body = invoke(lam, streamer, case)
    assert r["FunctionError"] == "Unhandled", body
    out = json.loads(body)
    assert (out["errorType"], out["errorMessage"]) == (error_type, message)


def test_error_after_writing_is_a_function_error(lam, streamer):
    r, body = invoke(lam, streamer, "late")
    assert r.get("FunctionError") == "Unhandled", body
    out = json.loads(body)
    assert (out["errorType"], out["errorMessage"]) == ("TypeError", "late failure")


def test_the_streaming_example(lam):
    name = unique_name("stream")
    code = (REPO / "examples/streaming/index.mjs").read_text()
    lam.create_function(FunctionName=name, Runtime="nodejs20.x", Handler="index.handler", Role=ROLE,
                        Code={"ZipFile": make_zip({"index.mjs": code})}, Timeout=10)
    r, body = invoke(lam, name, "example")
    assert "FunctionError" not in r, body
    prelude, _, text = body.partition(b"\0" * 8)
    assert json.loads(prelude)["statusCode"] == 200
    lines = text.decode().splitlines()
    assert [line.split(" at ")[0] for line in lines] == [f"chunk {i} of 5" for i in range(1, 6)] + ["done"]


def test_functions_may_opt_out_of_the_global(lam):
    name = unique_name("stream")
    lam.create_function(FunctionName=name, Runtime="nodejs20.x", Handler="index.handler", Role=ROLE,
                        Code={"ZipFile": make_zip({"index.mjs": "export const handler = async () => typeof awslambda;"})},
                        Environment={"Variables": {"AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA": "true"}})
    r, body = invoke(lam, name, "none")
    assert json.loads(body) == "undefined", body
