// Nimbus managed runtime for Node.js: a Lambda Runtime API client.
//
// Loads the handler named by _HANDLER (`path/module.function`) from
// LAMBDA_TASK_ROOT, as an ES module or CommonJS, then serves invocations
// from AWS_LAMBDA_RUNTIME_API. Async, promise and callback handlers are
// supported, and so are streaming ones (`awslambda.streamifyResponse`),
// whose response goes over the HTTP Runtime API as AWS's runtime sends it;
// errors are reported in AWS's shapes.
//
// Started ahead of its function (its stdin is then the worker's socket), it
// first waits for one JSON line there carrying the function's whole
// environment, then talks to the worker over that socket in frames.
//
// As on AWS: console output carries the timestamp, request id and level, as
// text or, under AWS_LAMBDA_LOG_FORMAT=JSON, as JSON lines, filtered by
// AWS_LAMBDA_LOG_LEVEL; ES modules resolve bare specifiers in NODE_PATH too
// (esm-paths.mjs), so the runtime's SDK and layers' packages import.

import { existsSync, fstatSync } from "node:fs";
import http from "node:http";
import Module, { register } from "node:module";
import net from "node:net";
import path from "node:path";
import { Writable } from "node:stream";
import { finished } from "node:stream/promises";
import { pathToFileURL } from "node:url";
import { format } from "node:util";

// Frames on the worker's socket, the Runtime API without HTTP (the
// worker's channel.rs): `next`, `response <id> <len>`, `error <id> <len>`,
// `init_error <len>`; the worker answers `invoke <meta len> <payload len>`.
class Channel {
  constructor(socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.waiting = [];
    // Whether `next` went with the last response or error.
    this.asked = false;
    socket.on("data", (d) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.wake();
    });
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  wake() {
    const waiting = this.waiting;
    this.waiting = [];
    for (const resolve of waiting) resolve();
  }

  async more() {
    if (this.closed) process.exit(0);
    await new Promise((resolve) => this.waiting.push(resolve));
  }

  async line() {
    for (;;) {
      const i = this.buf.indexOf(10);
      if (i >= 0) {
        const line = this.buf.subarray(0, i).toString();
        this.buf = this.buf.subarray(i + 1);
        return line;
      }
      await this.more();
    }
  }

  async take(n) {
    while (this.buf.length < n) await this.more();
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  async next() {
    if (!this.asked) this.socket.write("next\n");
    this.asked = false;
    const [, metaLen, payloadLen] = (await this.line()).split(" ");
    const meta = JSON.parse((await this.take(Number(metaLen))).toString());
    const body = (await this.take(Number(payloadLen))).toString();
    return { headers: { get: (name) => meta[name] ?? null }, text: async () => body };
  }

  // `last`: the runtime exits after this, and asks for nothing more.
  async post(pathname, body, last = false) {
    const data = body ?? "";
    const length = Buffer.byteLength(data);
    if (pathname === "/init/error") {
      this.socket.write(`init_error ${length}\n${data}`);
      // The worker's "ok": the error is in before this runtime exits.
      await this.line();
      return;
    }
    // `next` goes with the response or error: the loop always asks for the
    // next invocation right after, and one write wakes the worker once.
    const [, , id, kind] = pathname.split("/");
    if (last) return new Promise((resolve) => this.socket.write(`${kind} ${id} ${length}\n${data}`, resolve));
    this.socket.write(`${kind} ${id} ${length}\n${data}next\n`);
    this.asked = true;
  }
}

// Before a handler's imports: resolution hooks over the NODE_PATH this
// runtime started with (the same directories its functions get). Node 20
// runs them on a thread of their own (about 80 ms of CPU to start), so the
// worker asks for them (--esm-hooks) only for handlers that may import
// (env.rs, node_imports) and only where the sandbox's root has no
// /node_modules, a link to the SDK that Node's own resolution finds (a
// function whose layers hold packages, or no sandbox): a template for such
// functions is started with the flag, and so is a runtime started for its
// function.
if (process.argv.includes("--esm-hooks")) {
  register(new URL("./esm-paths.mjs", import.meta.url).href, {
    data: { dirs: (process.env.NODE_PATH || "").split(":") },
  });
}

let channel = null;
if (fstatSync(0).isSocket()) {
  // The module loader sets itself up on first use: do that now, ahead of the function.
  await import("data:text/javascript,export default 0").catch(() => {});
  channel = new Channel(new net.Socket({ fd: 0, readable: true, writable: true }));
  const launch = JSON.parse(await channel.line());
  // Only what differs: a TZ deleted, even to be set again, makes V8 detect
  // the time zone anew, and ICU, without TZ and with an /etc/localtime that
  // is no symbolic link (a sandbox's is a bind), searches /usr/share/zoneinfo
  // for a file like it: about 7 ms of CPU.
  const env = new Map(launch.env);
  for (const key of Object.keys(process.env)) if (!env.has(key)) delete process.env[key];
  for (const [key, value] of env) if (process.env[key] !== value) process.env[key] = value;
  // require() reads NODE_PATH once, at start: read it again.
  Module._initPaths();
  process.chdir(process.env.LAMBDA_TASK_ROOT);
}
const API = `http://${process.env.AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime`;
const TASK_ROOT = process.env.LAMBDA_TASK_ROOT || process.cwd();
let currentRequestId;

const LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

// An Error inside a JSON log line, as AWS's runtime writes it.
function jsonReplacer(_, value) {
  if (!(value instanceof Error)) return value;
  const stack = typeof value.stack === "string" ? value.stack.split("\n") : value.stack;
  return { errorType: value.constructor?.name ?? "UnknownError", errorMessage: value.message, stackTrace: stack, ...value };
}

function jsonLine(level, params) {
  const record = { timestamp: new Date().toISOString(), level, requestId: currentRequestId };
  if (params.length === 1) {
    record.message = params[0];
    try {
      return JSON.stringify(record, jsonReplacer);
    } catch {
      record.message = format(params[0]);
      return JSON.stringify(record);
    }
  }
  record.message = format(...params);
  const err = params.find((p) => p instanceof Error);
  if (err) Object.assign(record, { errorType: err.constructor?.name ?? "UnknownError", errorMessage: err.message, stackTrace: String(err.stack).split("\n") });
  return JSON.stringify(record);
}

// console.* write one log event per call at or above AWS_LAMBDA_LOG_LEVEL:
// a call of several lines is opened with the worker's record mark (\x1e)
// and its newlines written as \r, and the worker stores it with its newlines.
const json = (process.env.AWS_LAMBDA_LOG_FORMAT || "").toUpperCase() === "JSON";
const floor = Math.max(0, LEVELS.indexOf((process.env.AWS_LAMBDA_LOG_LEVEL || "").toUpperCase()));
for (const [method, level] of [["trace", "TRACE"], ["debug", "DEBUG"], ["info", "INFO"], ["log", "INFO"], ["warn", "WARN"], ["error", "ERROR"], ["fatal", "FATAL"]]) {
  if (LEVELS.indexOf(level) < floor) {
    console[method] = () => {};
    continue;
  }
  console[method] = (...params) => {
    const line = json ? jsonLine(level, params) : `${new Date().toISOString()}\t${currentRequestId}\t${level}\t${format(...params)}`;
    process.stdout.write(line.includes("\n") ? `\x1e${line.replace(/\n/g, "\r")}\n` : `${line}\n`);
  };
}

// What AWS's runtime takes for an error: an Error, or any object with a
// name, a message and a stack (errors from another realm, or built by hand).
const isError = (err) =>
  err instanceof Error ||
  (err !== null && typeof err === "object" && ["name", "message", "stack"].every((k) => typeof err[k] === "string"));

// An error in a log line, as AWS's runtime writes it: its type, message,
// code and own properties, and its stack as lines.
function formatted(err) {
  const expand = (_key, v) =>
    v instanceof Error
      ? Object.assign({ errorType: v.name, errorMessage: v.message, code: v.code }, v, typeof v.stack === "string" ? { stack: v.stack.split("\n") } : {})
      : v;
  try {
    return JSON.stringify(err, expand);
  } catch {
    return errorBody(err);
  }
}

function errorBody(err, errorType) {
  try {
    if (!isError(err)) {
      // What AWS's runtime reports for a thrown (or failed with) value that is no Error.
      return JSON.stringify({ errorType: errorType || typeof err, errorMessage: String(err), trace: [] });
    }
    return JSON.stringify({
      errorType: errorType || err.name || "Error",
      errorMessage: err.message,
      trace: (err.stack || "").split("\n"),
    });
  } catch {
    // A value whose text cannot be had (its toString throws, or it has none): AWS's words.
    return JSON.stringify({
      errorType: "handled",
      errorMessage: "callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack",
    });
  }
}

async function post(pathname, body, headers = {}, last = false) {
  if (channel) return channel.post(pathname, body, last);
  await fetch(API + pathname, { method: "POST", body, headers });
}

function nextInvocation() {
  return channel ? channel.next() : fetch(`${API}/invocation/next`);
}

// The console line of a failed invocation, as AWS's runtime writes it: the
// error as JSON text, or an error record in JSON format.
function logInvokeError(err) {
  if (json) console.error(err instanceof Error ? err : new Error(JSON.parse(errorBody(err)).errorMessage));
  else console.error(`Invoke Error \t${formatted(err)}`);
}

// Response streaming, as AWS's Node.js runtime offers it. A handler wrapped
// in `awslambda.streamifyResponse` is called `(event, responseStream,
// context)`; the stream's bytes go to the Runtime API as they are written,
// in one chunked POST with AWS's streaming headers, and an error after the
// first byte is reported in that POST's trailers (the status line is gone by
// then). The frame channel carries whole bodies only, so it is not used.
const STREAMING = Symbol("nimbus.streamingHandler");
const HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response";
const ERROR_TYPE = "Lambda-Runtime-Function-Error-Type";
const ERROR_BODY = "Lambda-Runtime-Function-Error-Body";

class InvalidStreamingOperation extends Error {}
InvalidStreamingOperation.prototype.name = "Runtime.InvalidStreamingOperation";

const bytesOrText = (chunk) => (typeof chunk === "string" || chunk instanceof Uint8Array ? chunk : JSON.stringify(chunk));

class ResponseStream extends Writable {
  constructor(requestId, highWaterMark) {
    super(highWaterMark === undefined ? {} : { highWaterMark });
    this.requestId = requestId;
    this.contentType = "application/octet-stream";
    this.prelude = null;
    this.request = null;
    this.failed = false;
    // Its errors reach the invocation through `finished`: not as uncaught events.
    this.on("error", () => {});
  }

  setContentType(contentType) {
    if (this.request) throw new InvalidStreamingOperation("Cannot set content-type, too late.");
    this.contentType = contentType;
  }

  // As on AWS, anything but bytes and text is written as its JSON.
  write(chunk, encoding, callback) {
    return super.write(bytesOrText(chunk), encoding, callback);
  }

  end(chunk, encoding, callback) {
    return typeof chunk === "function" || chunk == null ? super.end(chunk, encoding, callback) : super.end(bytesOrText(chunk), encoding, callback);
  }

  // The POST starts with the first byte (or the end), when the content type
  // is settled; `answered` settles once the Runtime API has replied.
  open() {
    if (this.request) return;
    const request = http.request(`${API}/invocation/${this.requestId}/response`, {
      method: "POST",
      agent: false,
      headers: {
        "Lambda-Runtime-Function-Response-Mode": "streaming",
        "Transfer-Encoding": "chunked",
        Trailer: `${ERROR_TYPE}, ${ERROR_BODY}`,
        "Content-Type": this.contentType,
      },
    });
    this.answered = new Promise((resolve, reject) => {
      request.on("response", (res) => res.resume().on("end", resolve).on("error", reject));
      request.on("error", (err) => {
        this.failed = true;
        reject(err);
      });
    });
    // Nobody may be waiting yet: a transport failure also fails the writes.
    this.answered.catch(() => {});
    this.request = request;
    if (this.prelude) request.write(this.prelude);
  }

  _write(chunk, _encoding, callback) {
    this.open();
    this.request.write(chunk, callback);
  }

  _final(callback) {
    this.open();
    this.request.end(callback);
  }

  // Ends the POST with the error in its trailers, unless it already ended.
  async fail(err) {
    if (this.request.writableEnded) return;
    const body = errorBody(err);
    const type = JSON.parse(body).errorType.replace(/[^\x20-\x7e]/g, "?");
    this.request.addTrailers({ [ERROR_TYPE]: type, [ERROR_BODY]: Buffer.from(body).toString("base64") });
    this.request.end();
    await this.answered;
  }
}

// `awslambda.HttpResponseStream.from(stream, {statusCode, headers, cookies})`:
// the body of a function URL's streamed response follows its JSON prelude
// and 8 NUL bytes.
class HttpResponseStream {
  static from(stream, prelude) {
    stream.setContentType(HTTP_INTEGRATION);
    stream.prelude = Buffer.concat([Buffer.from(JSON.stringify(prelude)), Buffer.alloc(8)]);
    return stream;
  }
}

// The globals AWS's runtime defines, unless the function opts out as AWS allows.
function defineGlobals() {
  if (["1", "true"].includes(process.env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA)) return;
  globalThis.awslambda = {
    ...globalThis.awslambda,
    streamifyResponse(handler, options) {
      handler[STREAMING] = { highWaterMark: typeof options?.highWaterMark === "number" ? options.highWaterMark : undefined };
      return handler;
    },
    HttpResponseStream,
  };
}

// One streamed invocation: done when the stream has ended and the Runtime
// API has its response, or the error has been reported. As on AWS, the
// stream must be ended, if need be after the handler returns.
async function stream(fn, event, ctx, id) {
  const responseStream = new ResponseStream(id, fn[STREAMING].highWaterMark);
  try {
    const pending = fn(event, responseStream, ctx);
    if (typeof pending?.then !== "function") throw new Error("Streaming does not support non-async handlers.");
    if ((await pending) !== undefined) console.warn("Streaming handlers ignore return values.");
    await finished(responseStream);
    await responseStream.answered;
  } catch (err) {
    logInvokeError(err);
    // Before the first byte the error has a whole response of its own.
    if (!responseStream.request || responseStream.failed) {
      await post(`/invocation/${id}/error`, errorBody(err), { "Lambda-Runtime-Function-Error-Type": "Unhandled" });
    } else {
      await responseStream.fail(err).catch(() => {});
    }
  } finally {
    // Late writes from a finished invocation go nowhere.
    responseStream.destroy();
  }
}

async function initError(err, errorType, message) {
  const body = JSON.parse(errorBody(err, errorType));
  if (message !== undefined) body.errorMessage = message;
  console.error(`${errorType}: ${body.errorMessage}`);
  await post("/init/error", JSON.stringify(body), { "Lambda-Runtime-Function-Error-Type": errorType });
  process.exit(1);
}

function resolveModule(modulePath) {
  const base = path.resolve(TASK_ROOT, modulePath);
  for (const ext of [".js", ".mjs", ".cjs"]) {
    if (existsSync(base + ext)) return base + ext;
  }
  return null;
}

// `_HANDLER` as AWS's runtime reads it: a directory under the task root,
// then the module up to the first dot, then a path of properties
// (`dir/app.nested.fn`). A path out of the task root is refused.
async function loadHandler() {
  const handler = process.env._HANDLER || "";
  const slash = handler.lastIndexOf("/") + 1;
  const dot = handler.indexOf(".", slash);
  if (handler.includes("..")) {
    return initError(
      new Error(`'${handler}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`),
      "Runtime.MalformedHandlerName",
    );
  }
  if (dot <= slash || dot === handler.length - 1) {
    return initError(new Error(`Bad handler ${handler}`), "Runtime.MalformedHandlerName");
  }
  const modulePath = handler.slice(0, dot);
  const fnPath = handler.slice(dot + 1).split(".");
  const file = resolveModule(modulePath);
  if (!file) {
    return initError(new Error(`Cannot find module '${modulePath}'`), "Runtime.ImportModuleError");
  }
  let mod;
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (err) {
    if (err instanceof SyntaxError) return initError(err, "Runtime.UserCodeSyntaxError", String(err));
    // A CommonJS `require` of a missing package; anything else the module
    // threw is reported as itself.
    if (err?.code === "MODULE_NOT_FOUND") return initError(err, "Runtime.ImportModuleError");
    return initError(err, isError(err) ? err.name : typeof err);
  }
  // A CommonJS module's exports are its default export when Node cannot
  // list them; an ES module's default export is not its exports.
  const [first, ...rest] = fnPath;
  const top = mod[first] ?? (file.endsWith(".mjs") ? undefined : mod.default?.[first]);
  const fn = rest.reduce((at, name) => (at === undefined || at === null ? undefined : at[name]), top);
  if (fn === undefined) {
    return initError(new Error(`${handler} is undefined or not exported`), "Runtime.HandlerNotFound");
  }
  if (typeof fn !== "function") {
    return initError(new Error(`${handler} is not a function`), "Runtime.HandlerNotFound");
  }
  return fn;
}

function context(headers) {
  const deadline = Number(headers.get("lambda-runtime-deadline-ms") || 0);
  const cc = headers.get("lambda-runtime-client-context");
  const identity = headers.get("lambda-runtime-cognito-identity");
  return {
    awsRequestId: headers.get("lambda-runtime-aws-request-id"),
    invokedFunctionArn: headers.get("lambda-runtime-invoked-function-arn"),
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: cc ? JSON.parse(cc) : undefined,
    identity: identity ? JSON.parse(identity) : undefined,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

// Runs one invocation as AWS's runtime does, to `{ result }` or `{ err }`.
// The handler gets a callback, and its result counts only if it is a
// promise. `callback(null, r)` answers once the event loop is empty, unless
// `context.callbackWaitsForEmptyEventLoop` is false; `context.succeed`,
// `fail` and `done` answer at once; a handler that answers nothing answers
// null when the event loop empties. The worker's socket is left out of the
// event loop meanwhile, so that only the function's own work holds it.
function run(fn, event, headers) {
  return new Promise((resolve) => {
    let reported = false;
    let waits = true;
    let whenEmpty = null;
    const onEmpty = (then) => {
      if (whenEmpty) process.removeListener("beforeExit", whenEmpty);
      whenEmpty = then && (() => setImmediate(then));
      if (whenEmpty) process.once("beforeExit", whenEmpty);
    };
    const report = (outcome) => {
      onEmpty(null);
      if (reported) {
        console.error("Invocation has already been reported as done. Cannot call complete more than once per invocation.");
        return;
      }
      reported = true;
      if (channel) channel.socket.ref();
      resolve(outcome);
    };
    // The first completion counts, callback or promise, as in AWS's runtime
    // (a handler calling back and returning a promise answers the callback's).
    let completed = false;
    const callback = (err, result) => {
      if (completed) return;
      completed = true;
      if (err !== undefined && err !== null) report({ err });
      else if (!waits) report({ result });
      else onEmpty(() => report({ result }));
    };
    const done = (err, result) => {
      if (!completed) waits = false;
      callback(err, result);
    };
    const ctx = Object.assign(context(headers), {
      succeed: (result) => done(null, result),
      fail: (err) => done(err === undefined || err === null ? "handled" : err),
      done,
    });
    Object.defineProperty(ctx, "callbackWaitsForEmptyEventLoop", {
      get: () => waits,
      set: (v) => (waits = Boolean(v)),
      enumerable: true,
      configurable: true,
    });
    onEmpty(() => report({ result: null }));
    if (channel) channel.socket.unref();
    try {
      const maybe = fn(event, ctx, callback);
      if (maybe && typeof maybe.then === "function") maybe.then(ctx.succeed, ctx.fail);
    } catch (err) {
      callback(err);
    }
  });
}

// An error nothing catches (a rejected promise nobody awaits, a throw in a
// timer) ends the runtime, as AWS's does (exit 128 and 129), so the next
// invocation gets a fresh one; first it is reported as the error of the
// invocation under way, or of the init. (A streaming invocation's response
// may have begun: it is cut off.)
let phase = "init";
function fatal(errorType, errorMessage, stack, what, code) {
  const body = { errorType, errorMessage, trace: stack };
  console.error(`${what} \t${JSON.stringify(body)}`);
  const headers = { "Lambda-Runtime-Function-Error-Type": phase === "init" ? errorType : "Unhandled" };
  const sent =
    phase === "init" ? post("/init/error", JSON.stringify(body), headers)
    : phase === "invoke" ? post(`/invocation/${currentRequestId}/error`, JSON.stringify(body), headers, true)
    : Promise.resolve();
  setTimeout(() => process.exit(code), 2000).unref();
  sent.finally(() => process.exit(code));
}
const text = (value) => {
  try {
    return String(value);
  } catch {
    return "[unprintable]";
  }
};
process.on("unhandledRejection", (reason) =>
  fatal("Runtime.UnhandledPromiseRejection", text(reason), text(reason?.stack ?? "").split("\n"), "Unhandled Promise Rejection", 128),
);
process.on("uncaughtException", (err) => {
  const body = JSON.parse(errorBody(err));
  fatal(body.errorType, body.errorMessage, body.trace, "Uncaught Exception", 129);
});

defineGlobals();
const fn = await loadHandler();
phase = "idle";
for (;;) {
  const next = await nextInvocation();
  const id = next.headers.get("lambda-runtime-aws-request-id");
  currentRequestId = id;
  process.env._X_AMZN_TRACE_ID = next.headers.get("lambda-runtime-trace-id") || "";
  const event = JSON.parse(await next.text());
  if (fn[STREAMING]) {
    phase = "stream";
    await stream(fn, event, context(next.headers), id);
    phase = "idle";
    continue;
  }
  phase = "invoke";
  const outcome = await run(fn, event, next.headers);
  phase = "idle";
  if ("err" in outcome) {
    logInvokeError(outcome.err);
    await post(`/invocation/${id}/error`, errorBody(outcome.err), { "Lambda-Runtime-Function-Error-Type": "Unhandled" });
    continue;
  }
  let body;
  try {
    body = JSON.stringify(outcome.result === undefined ? null : outcome.result);
  } catch {
    // AWS's words for a result JSON cannot hold (a cycle, a BigInt).
    const err = new Error("Unable to stringify response body");
    logInvokeError(err);
    await post(`/invocation/${id}/error`, errorBody(err), { "Lambda-Runtime-Function-Error-Type": "Unhandled" });
    continue;
  }
  await post(`/invocation/${id}/response`, body);
}
