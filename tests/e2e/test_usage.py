"""Usage and cost, end to end: `nimbus usage` and `GET /_nimbus/usage`
report requests and GB-seconds per function and day that add up exactly to
the REPORT lines' billed durations, priced at AWS's list prices (x86_64
and arm64, free tier on or off, or a price table of the operator's)."""

import base64
import datetime
import json
import re

import pytest

from conftest import Server, create, logs_client, make_zip, nimbus_cli, signed_request, send, unique_name, wait_for, wait_ready

CODE = make_zip({"app.py": '''
import time

def handler(event, context):
    time.sleep(event.get("sleep_ms", 0) / 1000)
    if event.get("fail"):
        raise RuntimeError("failed as asked")
    return "ok"
'''})

X86_GBS = 0.0000166667
ARM_GBS = 0.0000133334
PER_REQUEST = 0.20 / 1e6


def billed_ms(lam, name, payload):
    """Invokes once; returns the REPORT line's billed duration."""
    r = lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode(), LogType="Tail")
    tail = base64.b64decode(r["LogResult"]).decode()
    return int(re.search(r"Billed Duration: (\d+) ms", tail).group(1))


def usage_json(server, *args):
    return json.loads(nimbus_cli(server, "usage", "--json", *args).stdout)


def recorded(server, name, requests):
    """Waits until a function's invocation records are stored (a writer task
    stores them just after each invoke answers)."""
    wait_for(lambda: usage_json(server, "--function", name)["requests"] == requests, f"{name}'s records")


@pytest.fixture(scope="module")
def used(server, lam):
    """Two functions (x86_64 at 256 MB, arm64 at 512 MB) and the billed ms of each invoke."""
    x86, arm = unique_name("usage-x86"), unique_name("usage-arm")
    create(lam, x86, CODE, MemorySize=256)
    create(lam, arm, CODE, MemorySize=512, Architectures=["arm64"])
    wait_ready(lam, x86)
    wait_ready(lam, arm)
    billed = {x86: [billed_ms(lam, x86, {"sleep_ms": ms}) for ms in (0, 30, 120)],
              arm: [billed_ms(lam, arm, {}) for _ in range(2)]}
    for name, calls in billed.items():
        recorded(server, name, len(calls))
    return x86, arm, billed


def test_usage_adds_up_to_the_report_lines(server, used):
    x86, arm, billed = used
    for name, memory, arch, price in [(x86, 256, "x86_64", X86_GBS), (arm, 512, "arm64", ARM_GBS)]:
        report = usage_json(server, "--function", name)
        [day] = report["functions"]
        assert (day["function"], day["architecture"]) == (name, arch)
        assert day["requests"] == len(billed[name]) == report["requests"]
        assert day["billedMs"] == sum(billed[name]) == report["billedMs"]
        assert day["mbMs"] == sum(billed[name]) * memory
        assert day["gbSeconds"] == pytest.approx(sum(billed[name]) * memory / 1024 / 1000, rel=1e-12)
        cost = len(billed[name]) * PER_REQUEST + day["gbSeconds"] * price
        assert report["grossCost"] == pytest.approx(cost, rel=1e-9) and report["cost"] == report["grossCost"]
        assert report["freeTierCredit"] == 0
    both = usage_json(server, "--since", "1d")
    names = {d["function"] for d in both["functions"]}
    assert {x86, arm} <= names
    assert both["requests"] == sum(d["requests"] for d in both["functions"])


def test_free_tier_takes_small_use_to_zero(server, used):
    x86, _, _ = used
    report = usage_json(server, "--function", x86, "--free-tier")
    assert report["cost"] == 0 and report["freeTierCredit"] == pytest.approx(report["grossCost"], rel=1e-12)
    assert report["prices"]["freeTier"] == {"requests": 1000000, "gbSeconds": 400000.0}


def test_table_output_and_since(server, used):
    x86, _, billed = used
    out = nimbus_cli(server, "usage", "--function", x86).stdout
    assert re.search(rf"^\d{{4}}-\d\d-\d\d\s+{x86}\s+x86_64\s+3\s+{sum(billed[x86])}\s", out, re.M), out
    assert "TOTAL" in out and "cost at list prices" in out
    assert usage_json(server, "--function", x86, "--since", "2000-01-01")["requests"] == 3
    assert usage_json(server, "--function", "no-such-function")["functions"] == []


def test_the_api_is_signed_and_checks_its_times(server, used):
    x86, _, _ = used
    assert send("GET", server.endpoint + f"/_nimbus/usage?function={x86}")[0] == 403
    status, _, body = signed_request(server, "GET", f"/_nimbus/usage?function={x86}&freeTier=true")
    assert status == 200 and json.loads(body)["requests"] == 3
    status, _, body = signed_request(server, "GET", "/_nimbus/usage?start=yesterday")
    assert status == 400 and "is not a time" in json.loads(body)["message"]


def priced_server(tmp_path, prices, *args):
    """A server of its own, with the operator's price table `prices`."""
    table = tmp_path / "prices.json"
    table.write_text(json.dumps(prices))
    return Server(tmp_path / "data", args=("--prices", str(table), *args)).start()


def ready_functions(lam, *prefixes):
    """A new function (of CODE) per prefix, each ready to invoke; their names."""
    names = [unique_name(p) for p in prefixes]
    for name in names:
        create(lam, name, CODE)
        wait_ready(lam, name)
    return names


def test_a_price_table_of_the_operators(tmp_path):
    prices = {"x86_64": {"perMillionRequests": 1_000_000.0, "perGbSecond": 0.0},
              "arm64": {"perMillionRequests": 0.0, "perGbSecond": 0.0},
              "freeTier": {"requests": 0, "gbSeconds": 0.0},
              "fargate": {"perVcpuHour": 1.0, "perGbHour": 0.5}}
    s = priced_server(tmp_path, prices)
    try:
        lam = s.client()
        [name] = ready_functions(lam, "priced")
        for _ in range(2):
            lam.invoke(FunctionName=name, Payload=b"{}")
        recorded(s, name, 2)
        report = usage_json(s, "--function", name)
        assert report["prices"] == prices
        assert report["cost"] == pytest.approx(2.0)
    finally:
        s.stop()


def test_every_run_is_billed_and_the_free_tier_is_the_months(tmp_path):
    # A dollar a request, GB-seconds free, and a free tier of three requests a month.
    prices = {"x86_64": {"perMillionRequests": 1_000_000.0, "perGbSecond": 0.0},
              "arm64": {"perMillionRequests": 1_000_000.0, "perGbSecond": 0.0},
              "freeTier": {"requests": 3, "gbSeconds": 0.0}}
    s = priced_server(tmp_path, prices, "--async-retry-delay", "0")
    try:
        lam = s.client()
        failing, fine = ready_functions(lam, "retried", "fine")
        # An event that fails and is retried twice runs three times, each a
        # billed request with its own REPORT line (the same request id, as on AWS).
        lam.put_function_event_invoke_config(FunctionName=failing, MaximumRetryAttempts=2)
        lam.invoke(FunctionName=failing, InvocationType="Event", Payload=b'{"fail": true}')
        recorded(s, failing, 3)
        events = logs_client(s).filter_log_events(logGroupName=f"/aws/lambda/{failing}", filterPattern="REPORT")
        billed = [int(re.search(r"Billed Duration: (\d+) ms", e["message"])[1]) for e in events["events"]]
        assert len(billed) == 3 and usage_json(s, "--function", failing)["billedMs"] == sum(billed), billed
        first_month = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m")
        # Those three runs took the month's free tier: a window after them gets none of it.
        since = datetime.datetime.now(datetime.timezone.utc)
        for _ in range(2):
            lam.invoke(FunctionName=fine, Payload=b"{}")
        recorded(s, fine, 2)
        window = usage_json(s, "--since", since.isoformat(), "--free-tier")
        assert window["requests"] == 2 and window["grossCost"] == pytest.approx(2.0)
        # (Unless the month turned between the two: a new month's tier is whole.)
        expected = 0.0 if since.strftime("%Y-%m") == first_month else 2.0
        assert window["freeTierCredit"] == pytest.approx(expected), window
        whole = usage_json(s, "--since", "1d", "--free-tier")
        assert whole["requests"] == 5 and whole["freeTierCredit"] == pytest.approx(3.0), whole
        # One function's report has its share of the node's credit (by cost):
        # the functions' reports add up to the node's.
        each = [usage_json(s, "--since", "1d", "--free-tier", "--function", n)["freeTierCredit"] for n in (failing, fine)]
        assert each == [pytest.approx(3.0 * 3 / 5), pytest.approx(3.0 * 2 / 5)], each
    finally:
        s.stop()


def test_a_graceful_stop_stores_every_record_and_line(tmp_path):
    # Records and lines are written off the invoke path; a SIGTERM right
    # after the last answer waits for them.
    s = Server(tmp_path / "data").start()
    lam = s.client()
    [name] = ready_functions(lam, "stopped")
    for _ in range(5):
        lam.invoke(FunctionName=name, Payload=b"{}")
    s.stop()
    assert s.proc.returncode == 0
    s = Server(tmp_path / "data").start()
    try:
        assert usage_json(s, "--function", name)["requests"] == 5
        reports = logs_client(s).filter_log_events(logGroupName=f"/aws/lambda/{name}", filterPattern="REPORT")
        assert len(reports["events"]) == 5
    finally:
        s.stop()
