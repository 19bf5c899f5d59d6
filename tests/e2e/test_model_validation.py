"""Every constraint of AWS's Lambda model, on every operation Nimbus routes:
a request breaking it gets 400 ValidationException with AWS's message.

The cases are generated here from the vendored model (the file the server's
tables are built from): for each operation and each constrained member,
top-level and nested, the test builds an otherwise valid request, breaks that
one member, and sends it raw and SigV4-signed (boto3 would refuse it
client-side). The expected message is worked out here from the model and
AWS's message format, independently of the server's code. Only operations
in Nimbus's route table get cases; a probe of the server checks that list."""

import base64
import copy
import dataclasses
import gzip
import json
import re
import urllib.parse

import pytest

from conftest import ACCOUNT, REGION, REPO, ROLE, Server, signed_request

MODEL = json.loads(gzip.decompress((REPO / "crates/model/models/lambda/2015-03-31/service-2.json.gz").read_bytes()))
SHAPES = MODEL["shapes"]
OPERATIONS = MODEL["operations"]

# Valid values tried, in order, for strings without an enum: the first that
# keeps the shape's length and pattern is used.
SAMPLES = [
    "a1", "1", "x86_64", ROLE,
    f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f",
    f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:l:1",
    f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:l",
    f"arn:aws:lambda:{REGION}:{ACCOUNT}:code-signing-config:csc-{'a' * 17}",
    f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:access-point/fsap-{'a' * 17}",
    f"arn:aws:sqs:{REGION}:{ACCOUNT}:q", ACCOUNT, "/mnt/a", "sg-1", "subnet-1", "$LATEST",
    "lambda:InvokeFunction", "lambda:GetLayerVersion", "o-abcdefghij", "a.b:80",
    "12345678-1234-1234-1234-123456789012", REGION,
    f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f:1/durable-execution/a/b",
    f"arn:aws:lambda:{REGION}:{ACCOUNT}:capacity-provider:c",
    f"arn:aws:lambda:{REGION}:{ACCOUNT}:runtime/{'r' * 10}", f"arn:aws:lambda:{REGION}::runtime:r",
]
# Values tried to break a pattern (padded to the shape's minimum length).
PATTERN_BREAKERS = ["!", "a!", "#", "~", "a b", "-"]
LONGEST_SENT = 5000


def python_pattern(p):
    # The model's Java patterns use \p{...} only in character classes, and
    # the test's values are ASCII.
    return p.replace(r"\p{L}", "a-zA-Z").replace(r"\p{Z}", " ").replace(r"\p{N}", "0-9")


def matches(shape, value):
    return "pattern" not in shape or re.fullmatch(python_pattern(shape["pattern"]), value) is not None


def java_double(d):
    return repr(float(d))


def java_hash_order(keys):
    """Keys in the order a java.util.HashMap iterates them (AWS renders maps so)."""
    capacity = 16
    while len(keys) * 4 > capacity * 3:
        capacity *= 2

    def bucket(k):
        h = 0
        units = k.encode("utf-16-le")
        for i in range(0, len(units), 2):
            h = (31 * h + int.from_bytes(units[i:i + 2], "little")) & 0xFFFFFFFF
        return (h ^ (h >> 16)) & (capacity - 1)
    return sorted(keys, key=bucket)


def lower_first(name):
    return name[:1].lower() + name[1:]


# ---- AWS's rules and messages ----

def broken(shape, v):
    """The rules of its own shape a value breaks, in AWS's order (pattern first)."""
    t, out = shape["type"], []
    if t == "string":
        if not matches(shape, v):
            out.append(f"Member must satisfy regular expression pattern: {shape['pattern']}")
    if t in ("string", "list", "map"):
        if len(v) < shape.get("min", 0):
            out.append(f"Member must have length greater than or equal to {shape['min']}")
        if "max" in shape and len(v) > shape["max"]:
            out.append(f"Member must have length less than or equal to {shape['max']}")
    if t == "string" and "enum" in shape and v not in shape["enum"]:
        out.append(f"Member must satisfy enum value set: [{', '.join(shape['enum'])}]")
    if t in ("integer", "long", "double"):
        show = java_double if t == "double" else str
        if "min" in shape and v < shape["min"]:
            out.append(f"Member must have value greater than or equal to {show(shape['min'])}")
        if "max" in shape and v > shape["max"]:
            out.append(f"Member must have value less than or equal to {show(shape['max'])}")
    return out


def element_rules(shape):
    """Every rule of a list element or map key/value shape, as AWS lists them."""
    rules = []
    if shape["type"] in ("string", "blob"):
        if "max" in shape:
            rules.append(f"Member must have length less than or equal to {shape['max']}")
        if "min" in shape:
            rules.append(f"Member must have length greater than or equal to {shape['min']}")
    if "pattern" in shape:
        rules.append(f"Member must satisfy regular expression pattern: {shape['pattern']}")
    if "enum" in shape:
        rules.append(f"Member must satisfy enum value set: [{', '.join(shape['enum'])}]")
    if shape["type"] in ("integer", "long", "double"):
        show = java_double if shape["type"] == "double" else str
        if "max" in shape:
            rules.append(f"Member must have value less than or equal to {show(shape['max'])}")
        if "min" in shape:
            rules.append(f"Member must have value greater than or equal to {show(shape['min'])}")
    return "[" + ", ".join(rules + ["Member must not be null"]) + "]"


def render(shape_name, v):
    shape = SHAPES[shape_name]
    if isinstance(v, list):
        return "[" + ", ".join(render(shape["member"]["shape"], e) for e in v) + "]"
    if isinstance(v, dict):
        def shape_of(k):
            return shape["value"]["shape"] if shape["type"] == "map" else shape["members"][k]["shape"]
        return "{" + ", ".join(f"{k}={render(shape_of(k), v[k])}" for k in java_hash_order(v)) + "}"
    if shape["type"] == "double":
        return java_double(v)
    return str(v)


def violation(shape_name, value, path, rule):
    shown = "" if SHAPES[shape_name].get("sensitive") else ("null " if value is None else f"'{render(shape_name, value)}' ")
    return f"Value {shown}at '{path}' failed to satisfy constraint: {rule}"


# ---- valid and invalid values ----

class Unbuildable(Exception):
    """No valid value of a shape could be made from the samples."""


def valid(shape_name):
    s = SHAPES[shape_name]
    t = s["type"]
    if t == "string":
        if "enum" in s:
            return s["enum"][0]
        lo, hi = s.get("min", 0), s.get("max", LONGEST_SENT)
        for c in SAMPLES + ["a" * max(lo, 1)]:
            if lo <= len(c) <= hi and matches(s, c):
                return c
        raise Unbuildable(shape_name)
    if t in ("integer", "long"):
        return min(s.get("min", 1), s.get("max", 1 << 31))
    if t == "double":
        return float(s.get("min", 0.0))
    if t == "boolean":
        return True
    if t == "blob":
        return base64.b64encode(b"x").decode()
    if t == "timestamp":
        return 0
    if t == "list":  # one element at least: an empty list in a query string is no list at all
        return [valid(s["member"]["shape"])] * max(s.get("min", 0), min(1, s.get("max", 1)))
    if t == "map":
        return {valid(s["key"]["shape"]): valid(s["value"]["shape"])} if s.get("min", 0) > 0 else {}
    return {m: valid(s["members"][m]["shape"]) for m in s.get("required", [])}


def bad_scalars(shape_name, location):
    """(value, broken rules) pairs, each breaking the scalar shape."""
    s = SHAPES[shape_name]
    t, out = s["type"], []
    if t == "string":
        fine = valid(shape_name)
        lo, hi = s.get("min", 0), s.get("max")
        if "enum" in s:
            out.append("NotAValue")
        if lo > 0:
            out.append(fine[: lo - 1] if len(fine) >= lo else "")
        if hi is not None and hi < LONGEST_SENT:
            out.append(fine + "a" * (hi + 1 - len(fine)))
        if "pattern" in s:
            for c in PATTERN_BREAKERS:
                c = c + c[-1] * max(0, lo - len(c))
                if (hi is None or len(c) <= hi) and not matches(s, c):
                    out.append(c)
                    break
        # A URI label or header cannot be empty or carry surrounding spaces.
        if location in ("uri", "header"):
            out = [v for v in out if v and v == v.strip()]
    elif t in ("integer", "long"):
        out += [s["min"] - 1] if "min" in s else []
        out += [s["max"] + 1] if "max" in s else []
    elif t == "double":
        out += [s["min"] - 0.5] if "min" in s else []
        out += [s["max"] + 0.5] if "max" in s else []
    return [(v, broken(s, v)) for v in out if broken(s, v)]


REMOVE = object()


def member_cases(shape_name, path, required, location, depth=0):
    """(name, value or REMOVE, expected violations) for one member."""
    s = SHAPES[shape_name]
    t = s["type"]
    if required and location != "uri":
        yield "missing", REMOVE, [violation(shape_name, None, path, "Member must not be null")]
    if t not in ("list", "map", "structure"):
        for v, rules in bad_scalars(shape_name, location):
            yield f"{v!r}"[:24], v, [violation(shape_name, v, path, r) for r in rules]
        return
    if depth > 3 or location == "header":
        return
    if t == "structure":
        if location != "body":
            return
        base = valid(shape_name)
        for m, ref in s["members"].items():
            for name, v, expected in member_cases(ref["shape"], f"{path}.{lower_first(m)}",
                                                  m in s.get("required", []), "body", depth + 1):
                value = copy.deepcopy(base)
                if v is REMOVE:
                    value.pop(m, None)
                else:
                    value[m] = v
                yield f"{m}.{name}", value, expected
        return
    if t == "list":
        member = s["member"]["shape"]
        element = valid(member)
        if s.get("min", 0) > 0 and location != "querystring":
            yield "empty", [], [violation(shape_name, [], path, r) for r in broken(s, [])]
        if "max" in s and s["max"] < 200:
            v = [element] * (s["max"] + 1)
            yield "too many", v, [violation(shape_name, v, path, r) for r in broken(s, v)]
        if SHAPES[member]["type"] == "structure":
            for name, item, expected in member_cases(member, f"{path}.1.member", False, location, depth + 1):
                if item is not REMOVE:
                    yield f"1.{name}", [item], expected
        else:
            for bad, _ in bad_scalars(member, location)[:1]:
                v = [bad]
                own = [violation(shape_name, v, path, r) for r in broken(s, v)]
                rule = f"Member must satisfy constraint: {element_rules(SHAPES[member])}"
                yield f"element {bad!r}"[:32], v, own + [violation(shape_name, v, path, rule)]
        return
    key, value = s["key"]["shape"], s["value"]["shape"]
    if location != "body":
        return
    for bad, _ in bad_scalars(key, location)[:1]:
        v = {bad: valid(value)}
        yield f"key {bad!r}"[:28], v, [violation(shape_name, v, path, f"Map keys must satisfy constraint: {element_rules(SHAPES[key])}")]
    for bad, _ in bad_scalars(value, location)[:1]:
        v = {valid(key): bad}
        yield f"value {bad!r}"[:30], v, [violation(shape_name, v, path, f"Map value must satisfy constraint: {element_rules(SHAPES[value])}")]


@dataclasses.dataclass
class Case:
    id: str
    operation: str
    labels: dict
    query: dict
    headers: dict
    body: dict
    expected: list


def base_request(inp):
    req = {"uri": {}, "querystring": {}, "header": {}, "body": {}}
    for m in inp.get("required", []):
        ref = inp["members"][m]
        req[ref.get("location", "body")][ref.get("locationName", m)] = valid(ref["shape"])
    for m, ref in inp["members"].items():  # every URI label is present
        if ref.get("location") == "uri":
            req["uri"].setdefault(ref.get("locationName", m), valid(ref["shape"]))
    return req


def generate():
    cases, unbuildable = [], []
    for op_name, op in sorted(OPERATIONS.items()):
        if "input" not in op:
            continue
        inp = SHAPES[op["input"]["shape"]]
        try:
            base = base_request(inp)
        except Unbuildable as e:
            unbuildable.append((op_name, str(e)))
            continue
        for m, ref in inp["members"].items():
            if m == inp.get("payload"):
                continue
            location, wire = ref.get("location", "body"), ref.get("locationName", m)
            try:
                found = list(member_cases(ref["shape"], lower_first(m), m in inp.get("required", []), location))
            except Unbuildable as e:
                unbuildable.append((f"{op_name}.{m}", str(e)))
                continue
            for name, value, expected in found:
                req = copy.deepcopy(base)
                if value is REMOVE:
                    req[location].pop(wire, None)
                else:
                    req[location][wire] = value
                cases.append(Case(f"{op_name}-{m}-{name}", op_name, req["uri"], req["querystring"],
                                  req["header"], req["body"], expected))
    return cases, unbuildable


CASES, UNBUILDABLE = generate()


def ops_in_route_table():
    """The operations Nimbus routes, read from its route table (the `Op` enum)."""
    source = (REPO / "crates" / "api" / "src" / "route.rs").read_text()
    body = source.split("pub enum Op {", 1)[1].split("\n}", 1)[0]
    return {m for m in re.findall(r"^\s+([A-Z][A-Za-z]+),", body, re.M)}


# Only operations Nimbus routes get cases; a probe below checks the list.
ROUTED = ops_in_route_table() & set(OPERATIONS)
ROUTED_CASES = [c for c in CASES if c.operation in ROUTED]


def send(server, operation, labels, query, headers, body):
    http = OPERATIONS[operation]["http"]
    uri, _, fixed = http["requestUri"].partition("?")
    for name, value in labels.items():
        uri = re.sub(r"\{" + re.escape(name) + r"\+?\}", urllib.parse.quote(str(value), safe=""), uri)
    pairs = [tuple(p.split("=", 1)) for p in fixed.split("&") if p]
    for name, value in query.items():
        pairs += [(name, str(v)) for v in (value if isinstance(value, list) else [value])]
    if pairs:
        uri += "?" + "&".join(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in pairs)
    takes_body = any(r.get("location") is None for r in SHAPES[OPERATIONS[operation]["input"]["shape"]]["members"].values())
    data = json.dumps(body).encode() if takes_body else b""
    hdrs = {k: str(v) for k, v in headers.items()}
    if data:
        hdrs["Content-Type"] = "application/json"
    return signed_request(server, http["method"], uri, body=data, headers=hdrs)


@pytest.fixture(scope="module")
def nimbus(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("model") / "data").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def routed(nimbus):
    """The model's operations this server routes: the others answer UnknownOperationException."""
    found = set()
    for name, op in OPERATIONS.items():
        if "input" not in op:
            continue
        labels = {r.get("locationName", m): "1" for m, r in SHAPES[op["input"]["shape"]]["members"].items()
                  if r.get("location") == "uri"}
        status, headers, _ = send(nimbus, name, labels, {}, {}, {})
        if headers.get("x-amzn-ErrorType") != "UnknownOperationException":
            found.add(name)
    return found


def test_the_model_yields_cases_for_every_routed_operation(routed):
    assert routed == ROUTED, "the route table and the server agree on what is routed"
    assert not UNBUILDABLE, f"no valid sample for: {UNBUILDABLE}"
    covered = {c.operation for c in CASES}
    # Operations whose input has no constraint at all have no case.
    unconstrained = {"GetAccountSettings"}
    assert routed - unconstrained <= covered, routed - covered
    assert len([c for c in CASES if c.operation in routed]) > 300


@pytest.mark.parametrize("case", ROUTED_CASES, ids=[c.id for c in ROUTED_CASES])
def test_every_constraint_answers_aws_message(nimbus, case):
    status, headers, body = send(nimbus, case.operation, case.labels, case.query, case.headers, case.body)
    n = len(case.expected)
    expected = f"{n} validation error{'' if n == 1 else 's'} detected: " + "; ".join(case.expected)
    assert (status, headers.get("x-amzn-ErrorType")) == (400, "ValidationException"), body
    assert json.loads(body)["message"] == expected


def test_two_violations_are_counted_last_declared_member_first(nimbus):
    body = {"FunctionName": "f", "Role": ROLE, "Code": {}, "Timeout": 0, "MemorySize": 1}
    status, headers, resp = send(nimbus, "CreateFunction", {}, {}, {}, body)
    assert (status, headers.get("x-amzn-ErrorType")) == (400, "ValidationException")
    assert json.loads(resp)["message"] == (
        "2 validation errors detected: "
        "Value '1' at 'memorySize' failed to satisfy constraint: Member must have value greater than or equal to 128; "
        "Value '0' at 'timeout' failed to satisfy constraint: Member must have value greater than or equal to 1"
    )


def test_validation_comes_before_looking_anything_up(nimbus):
    status, headers, resp = send(nimbus, "GetAlias", {"FunctionName": "missing", "Name": "123"}, {}, {}, {})
    assert (status, headers.get("x-amzn-ErrorType")) == (400, "ValidationException")
    status, headers, _ = send(nimbus, "GetAlias", {"FunctionName": "missing", "Name": "live"}, {}, {}, {})
    assert (status, headers.get("x-amzn-ErrorType")) == (404, "ResourceNotFoundException")


# The rules AWS applies beyond its model (nimbus_core::service_rules::RULES),
# each with AWS's error and message. They too come before any lookup.
ENV_OVER_4KB = {"BIG": "x" * 4100}
BEYOND_THE_MODEL = [
    ("MemorySize", "UpdateFunctionConfiguration", {"FunctionName": "missing"}, {"MemorySize": 10241},
     "InvalidParameterValueException",
     "'MemorySize' value failed to satisfy constraint: Member must have value less than or equal to 10240"),
    ("Timeout", "UpdateFunctionConfiguration", {"FunctionName": "missing"}, {"Timeout": 901},
     "InvalidParameterValueException",
     "'Timeout' value failed to satisfy constraint: Member must have value less than or equal to 900"),
    ("EphemeralStorage", "UpdateFunctionConfiguration", {"FunctionName": "missing"}, {"EphemeralStorage": {"Size": 10241}},
     "InvalidParameterValueException",
     "'EphemeralStorage.Size' value failed to satisfy constraint: Member must have value less than or equal to 10240"),
    ("reserved env", "UpdateFunctionConfiguration", {"FunctionName": "missing"},
     {"Environment": {"Variables": {"TZ": "x", "OK": "y"}}}, "InvalidParameterValueException",
     "Lambda was unable to configure your environment variables because the environment variables you have "
     "provided contains reserved keys that are currently not supported for modification. Reserved keys used in "
     "this request: TZ"),
    ("env over 4KB", "UpdateFunctionConfiguration", {"FunctionName": "missing"}, {"Environment": {"Variables": ENV_OVER_4KB}},
     "InvalidParameterValueException",
     "Lambda was unable to configure your environment variables because the environment variables you have "
     "provided exceeded the 4KB limit. String measured: " + json.dumps(ENV_OVER_4KB, separators=(",", ":"))),
    ("six layers", "UpdateFunctionConfiguration", {"FunctionName": "missing"},
     {"Layers": [f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:l:{i}" for i in range(1, 7)]},
     "InvalidParameterValueException", "Cannot reference more than 5 layers."),
    ("aws: tag", "TagResource", {"Resource": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:missing"},
     {"Tags": {"aws:x": "1"}}, "InvalidParameterValueException",
     "Tag key 'aws:x' is invalid: keys are 1-128 characters and may not start with 'aws:'."),
    ("65-character name", "CreateFunction", {}, {"FunctionName": "a" * 65, "Role": ROLE, "Code": {}},
     "ValidationException",
     f"1 validation error detected: Value '{'a' * 65}' at 'functionName' failed to satisfy constraint: "
     "Member must have length less than or equal to 64"),
    ("destination", "PutFunctionEventInvokeConfig", {"FunctionName": "missing"},
     {"DestinationConfig": {"OnSuccess": {"Destination": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t"}}},
     "InvalidParameterValueException", f"The destination ARN arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t is invalid."),
]


@pytest.mark.parametrize("operation, labels, body, code, message", [r[1:] for r in BEYOND_THE_MODEL],
                         ids=[r[0] for r in BEYOND_THE_MODEL])
def test_rules_beyond_the_model(nimbus, operation, labels, body, code, message):
    status, headers, resp = send(nimbus, operation, labels, {}, {}, body)
    assert (status, headers.get("x-amzn-ErrorType")) == (400, code), resp
    assert json.loads(resp)["message"] == message
