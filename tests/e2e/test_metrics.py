"""CloudWatch metrics of the AWS/Lambda namespace, end to end: invocations,
errors, durations with percentiles, throttles, aliases and async events as
`aws cloudwatch` and boto3 read them (GetMetricStatistics, GetMetricData,
ListMetrics), AWS's refusals of bad queries, the minute under way kept
across a restart, and the Prometheus scrape."""

import base64
import datetime
import json
from unittest import mock

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import (REGION, Server, aws_client, aws_json, create, error_code, make_zip, send, signed_request, unique_name,
                      wait_for, wait_ready)

CODE = make_zip({"app.py": '''
import time

def handler(event, context):
    time.sleep(event.get("sleep_ms", 0) / 1000)
    if event.get("fail"):
        raise RuntimeError("failing on purpose")
    return "ok"
'''})

NS = "AWS/Lambda"


def utc(minutes=0):
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)


TWO_DAYS_AGO = utc(-2 * 24 * 60)


def fn_dims(name):
    return [{"Name": "FunctionName", "Value": name}]


def stats(cw, name, metric, dims=None, **kw):
    """One datapoint over the last ten minutes (a period of an hour holds them all)."""
    if "ExtendedStatistics" not in kw:
        kw.setdefault("Statistics", ["Sum"])
    r = cw.get_metric_statistics(Namespace=NS, MetricName=metric, Dimensions=dims or fn_dims(name),
                                 StartTime=utc(-10), EndTime=utc(1), Period=3600, **kw)
    points = r["Datapoints"]
    assert len(points) <= 1, points
    return points[0] if points else None


@pytest.fixture(scope="module")
def cw(server):
    return aws_client(server, "cloudwatch")


@pytest.fixture(scope="module")
def invoked(lam):
    """A function invoked five times well, twice failing, once slowly (300 ms)."""
    name = unique_name("metrics")
    create(lam, name, CODE)
    wait_ready(lam, name)
    for payload in [{}] * 4 + [{"fail": True}] * 2 + [{"sleep_ms": 300}]:
        lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
    return name


def test_aws_cli_get_metric_statistics_counts_invocations_and_errors(server, invoked):
    for metric, total in [("Invocations", 7), ("Errors", 2)]:
        rc, out, err = aws_json(server, "cloudwatch", "get-metric-statistics", "--namespace", NS,
                                "--metric-name", metric, "--dimensions", f"Name=FunctionName,Value={invoked}",
                                "--start-time", utc(-10).isoformat(), "--end-time", utc(1).isoformat(),
                                "--period", "3600", "--statistics", "Sum", "SampleCount")
        assert rc == 0, err
        assert out["Label"] == metric
        [point] = out["Datapoints"]
        assert (point["Sum"], point["SampleCount"], point["Unit"]) == (total, 7, "Count")


def test_duration_percentiles_and_get_metric_data(cw, invoked):
    point = stats(cw, invoked, "Duration", ExtendedStatistics=["p50", "p99"])
    p50, p99 = point["ExtendedStatistics"]["p50"], point["ExtendedStatistics"]["p99"]
    assert point["Unit"] == "Milliseconds"
    # p99 of seven samples is the slowest (300 ms asleep), within the histogram's 2 %.
    assert 300 <= p99 < 2000 and p50 < 300, point
    maximum = stats(cw, invoked, "Duration", Statistics=["Maximum"])["Maximum"]
    assert p99 <= maximum <= p99 * 1.02
    r = cw.get_metric_data(StartTime=utc(-10), EndTime=utc(1), ScanBy="TimestampAscending", MetricDataQueries=[
        {"Id": "calls", "MetricStat": {"Metric": {"Namespace": NS, "MetricName": "Invocations",
                                                  "Dimensions": fn_dims(invoked)}, "Period": 60, "Stat": "Sum"}},
        {"Id": "slow", "Label": "p99 duration",
         "MetricStat": {"Metric": {"Namespace": NS, "MetricName": "Duration", "Dimensions": fn_dims(invoked)},
                        "Period": 600, "Stat": "p99"}},
        {"Id": "hidden", "ReturnData": False,
         "MetricStat": {"Metric": {"Namespace": NS, "MetricName": "Errors", "Dimensions": fn_dims(invoked)},
                        "Period": 60, "Stat": "Sum"}},
        {"Id": "other", "MetricStat": {"Metric": {"Namespace": "AWS/EC2", "MetricName": "CPUUtilization"},
                                       "Period": 60, "Stat": "Average"}},
    ])
    results = {q["Id"]: q for q in r["MetricDataResults"]}
    assert set(results) == {"calls", "slow", "other"}
    assert sum(results["calls"]["Values"]) == 7 and results["calls"]["StatusCode"] == "Complete"
    assert results["calls"]["Timestamps"] == sorted(results["calls"]["Timestamps"])
    assert results["slow"]["Label"] == "p99 duration" and results["slow"]["Values"][-1] >= 300
    assert results["other"]["Values"] == []
    concurrency = stats(cw, invoked, "ConcurrentExecutions", Statistics=["Maximum"])
    assert concurrency["Maximum"] == 1


def test_throttles_from_reserved_concurrency_zero(server, lam, cw):
    name = unique_name("throttled")
    create(lam, name, CODE)
    wait_ready(lam, name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    # Each throttled attempt counts, retries too: one attempt per call.
    key, secret = server.credentials()
    once = boto3.client("lambda", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}))
    for _ in range(3):
        with pytest.raises(ClientError) as e:
            once.invoke(FunctionName=name, Payload=b"{}")
        assert error_code(e) == "TooManyRequestsException"
    assert stats(cw, name, "Throttles")["Sum"] == 3
    assert stats(cw, name, "Invocations") is None


def test_aliases_have_resource_and_executed_version_dimensions(lam, cw):
    name = unique_name("aliased")
    create(lam, name, CODE)
    wait_ready(lam, name)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    for _ in range(2):
        lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
    lam.invoke(FunctionName=name, Payload=b"{}")
    resource = fn_dims(name) + [{"Name": "Resource", "Value": f"{name}:live"}]
    assert stats(cw, name, "Invocations", resource)["Sum"] == 2
    executed = resource + [{"Name": "ExecutedVersion", "Value": version}]
    assert stats(cw, name, "Invocations", executed)["Sum"] == 2
    assert stats(cw, name, "Invocations")["Sum"] == 3
    listed = cw.list_metrics(Namespace=NS, MetricName="Invocations", Dimensions=[{"Name": "FunctionName", "Value": name}])
    dims = sorted(sorted(d["Name"] for d in m["Dimensions"]) for m in listed["Metrics"])
    assert dims == [["ExecutedVersion", "FunctionName", "Resource"], ["FunctionName"], ["FunctionName", "Resource"]]


def test_list_metrics_filters_by_name_and_dimension(cw, invoked):
    mine = cw.list_metrics(Namespace=NS, Dimensions=[{"Name": "FunctionName", "Value": invoked}])["Metrics"]
    names = {m["MetricName"] for m in mine}
    assert {"Invocations", "Errors", "Duration", "ConcurrentExecutions"} <= names
    assert all(m["Namespace"] == NS and m["Dimensions"] == fn_dims(invoked) for m in mine)
    account = cw.list_metrics(Namespace=NS, MetricName="UnreservedConcurrentExecutions")["Metrics"]
    assert account == [{"Namespace": NS, "MetricName": "UnreservedConcurrentExecutions", "Dimensions": []}]
    assert cw.list_metrics(Namespace="AWS/EC2")["Metrics"] == []
    # The paginator (NextToken) sees the same, in one page here.
    pages = list(cw.get_paginator("list_metrics").paginate(Namespace=NS, MetricName="Errors"))
    assert {"Namespace": NS, "MetricName": "Errors", "Dimensions": fn_dims(invoked)} in pages[0]["Metrics"]


def test_async_events_received_aged_and_dropped(lam, cw):
    name = unique_name("async")
    create(lam, name, CODE)
    wait_ready(lam, name)
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"fail": true}')
    wait_for(lambda: (stats(cw, name, "AsyncEventsDropped") or {}).get("Sum") == 1, "the failed event to be dropped")
    assert stats(cw, name, "AsyncEventsReceived")["Sum"] == 2
    age = stats(cw, name, "AsyncEventAge", Statistics=["SampleCount", "Minimum"])
    assert age["SampleCount"] == 2 and age["Minimum"] >= 0 and age["Unit"] == "Milliseconds"
    wait_for(lambda: (stats(cw, name, "Invocations") or {}).get("Sum") == 2, "both events to run")


@pytest.mark.parametrize("kw,code,message", [
    (dict(Period=61, Statistics=["Sum"]), "InvalidParameterValue", "The parameter Period must be"),
    (dict(Period=60, Statistics=["Sum"], StartTime=utc(1), EndTime=utc(-1)), "InvalidParameterValue",
     "The parameter StartTime must be less than the parameter EndTime."),
    (dict(Period=60, Statistics=["Sum"], StartTime=TWO_DAYS_AGO, EndTime=TWO_DAYS_AGO + datetime.timedelta(days=2)),
     "InvalidParameterCombination",
     "You have requested up to 2,880 datapoints, which exceeds the limit of 1,440. You may reduce the datapoints "
     "requested by increasing Period, or decreasing the time range."),
    (dict(Period=60, Statistics=["Sum"], ExtendedStatistics=["p99"]), "InvalidParameterCombination",
     "Must specify either Statistics or ExtendedStatistics, but not both."),
    (dict(Period=60, ExtendedStatistics=["p101"]), "InvalidParameterValue",
     "The value p101 for parameter ExtendedStatistics is not valid."),
])
def test_bad_get_metric_statistics_are_refused_as_aws_does(cw, kw, code, message):
    params = dict(Namespace=NS, MetricName="Invocations", StartTime=utc(-10), EndTime=utc(0))
    params.update(kw)
    with pytest.raises(ClientError) as e:
        cw.get_metric_statistics(**params)
    assert error_code(e) == code
    assert e.value.response["Error"]["Message"].startswith(message)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_bad_get_metric_data_is_refused(cw):
    stat = {"Metric": {"Namespace": NS, "MetricName": "Invocations"}, "Period": 60, "Stat": "Sum"}
    cases = [
        ([{"Id": "e", "Expression": "SUM(METRICS())"}], "ValidationError"),
        ([{"Id": "a", "MetricStat": stat}, {"Id": "a", "MetricStat": stat}], "ValidationError"),
        ([{"Id": "a", "MetricStat": dict(stat, Stat="Median")}], "InvalidParameterValue"),
        ([{"Id": "a", "MetricStat": dict(stat, Period=61)}], "InvalidParameterValue"),
    ]
    for queries, code in cases:
        with pytest.raises(ClientError) as e:
            cw.get_metric_data(MetricDataQueries=queries, StartTime=utc(-10), EndTime=utc(0))
        assert error_code(e) == code, queries
    refusals = [
        (dict(MetricDataQueries=[{"Id": f"q{i}", "MetricStat": stat} for i in range(501)]), "InvalidParameterValue",
         "The collection MetricDataQueries must not have a size greater than 500."),
        (dict(MaxDatapoints=0), "InvalidParameterValue", "The value 0 for parameter MaxDatapoints"),
        (dict(NextToken="not-a-token"), "InvalidNextToken", "The value not-a-token for parameter NextToken"),
    ] + [
        # An Id names its query in metric math: AWS's pattern, whatever else is wrong.
        (dict(MetricDataQueries=[{"Id": bad, "MetricStat": stat}]), "ValidationError",
         f"The value {bad} for parameter MetricDataQueries.member.1.Id is not matching the expected pattern")
        for bad in ("Inv", "5xx", "a-b", "a.b")
    ]
    for kw, code, message in refusals:
        params = dict(MetricDataQueries=[{"Id": "a", "MetricStat": stat}], StartTime=utc(-10), EndTime=utc(0))
        params.update(kw)
        with pytest.raises(ClientError) as e:
            cw.get_metric_data(**params)
        assert error_code(e) == code and e.value.response["Error"]["Message"].startswith(message), kw
    # Two days of one-second periods ask for 172,801 datapoints, past a
    # page's 100,800: GetMetricData pages them rather than refusing.
    r = cw.get_metric_data(MetricDataQueries=[{"Id": "a", "MetricStat": dict(stat, Period=1)}],
                           StartTime=TWO_DAYS_AGO, EndTime=TWO_DAYS_AGO + datetime.timedelta(days=2))
    assert r["MetricDataResults"][0]["StatusCode"] == "Complete" and "NextToken" not in r


def test_times_far_out_of_range_are_cut_to_the_samples_that_can_exist(server, lam):
    # A minute under way in memory, which a range starting near i64::MIN
    # panicked on (a function of its own: `invoked`'s counts are asserted).
    name = unique_name("metrics-far")
    create(lam, name, CODE)
    wait_ready(lam, name)
    lam.invoke(FunctionName=name, Payload=b"{}")
    stat = {"Metric": {"Namespace": NS, "MetricName": "Invocations"}, "Period": 60, "Stat": "Sum"}
    calls = [
        ("GetMetricStatistics", {"Namespace": NS, "MetricName": "Invocations", "StartTime": -1e17,
                                 "EndTime": 1000, "Period": 60, "Statistics": ["Sum"]}, 200),
        ("GetMetricData", {"MetricDataQueries": [{"Id": "a", "MetricStat": stat}], "StartTime": -1e17,
                           "EndTime": 1000}, 200),
        # From the epoch to the year 9999 at one minute: far past 1,440 datapoints.
        ("GetMetricStatistics", {"Namespace": NS, "MetricName": "Invocations", "StartTime": -1e300,
                                 "EndTime": 1e300, "Period": 60, "Statistics": ["Sum"]}, 400),
    ]
    for op, body, expected in calls:
        headers = {"X-Amz-Target": f"GraniteServiceVersion20100801.{op}", "Content-Type": "application/x-amz-json-1.0"}
        status, got, out = signed_request(server, "POST", "/", json.dumps(body).encode(), headers, service="monitoring")
        assert status == expected, (op, body, out)
        if status == 400:
            # Query compatible: the body and x-amzn-ErrorType name the model's error shape,
            # which typed SDKs match; x-amzn-query-error has the query code, which botocore reports.
            shape = "InvalidParameterCombinationException"
            assert json.loads(out)["__type"] == f"com.amazonaws.cloudwatch#{shape}", out
            assert (got["x-amzn-ErrorType"], got["x-amzn-query-error"]) == (shape, "InvalidParameterCombination;Sender")
        else:
            answer = json.loads(out)
            points = answer["Datapoints"] if "Datapoints" in answer else answer["MetricDataResults"][0]["Values"]
            assert points == [], out


def test_requests_must_be_signed_for_monitoring(server):
    body = json.dumps({"Namespace": NS}).encode()
    headers = {"X-Amz-Target": "GraniteServiceVersion20100801.ListMetrics",
               "Content-Type": "application/x-amz-json-1.0"}
    status, _, _ = send("POST", server.endpoint + "/", body, headers)
    assert status in (400, 403)
    status, _, out = signed_request(server, "POST", "/", body, headers, service="monitoring")
    assert status == 200 and "Metrics" in json.loads(out)
    status, _, _ = signed_request(server, "POST", "/", body, headers, service="monitoring", secret="wrong")
    assert status == 403


def test_the_minute_under_way_survives_a_restart(tmp_path):
    s = Server(tmp_path / "data").start()
    try:
        lam = s.client()
        name = unique_name("kept")
        create(lam, name, CODE)
        wait_ready(lam, name)
        lam.invoke(FunctionName=name, Payload=b"{}")
        s.stop()
        s.start()
        assert stats(aws_client(s, "cloudwatch"), name, "Invocations")["Sum"] == 1
    finally:
        s.stop()


def test_prometheus_scrape_needs_the_key_pair_and_parses(server, invoked):
    url = server.endpoint + "/_nimbus/metrics"
    status, headers, _ = send("GET", url)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    key, secret = server.credentials()
    bad = base64.b64encode(f"{key}:wrong".encode()).decode()
    assert send("GET", url, headers={"Authorization": f"Basic {bad}"})[0] == 401
    good = base64.b64encode(f"{key}:{secret}".encode()).decode()

    def scrape():
        status, headers, body = send("GET", url, headers={"Authorization": f"Basic {good}"})
        assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
        return {f.name: f for f in text_string_to_metric_families(body.decode())}

    def records_written(families):
        return any(s.labels.get("writer") == "invocation_records" and s.name.endswith("_count") and s.value >= 1
                   for s in families["nimbus_store_write_seconds"].samples)

    # The invocation records are written by a task just after the invokes answered.
    families = wait_for(lambda: (lambda f: records_written(f) and f)(scrape()), "a timed record write")
    mine = {"function": invoked}

    def value(family, sample_name, labels):
        return next(s.value for s in families[family].samples if s.name == sample_name and s.labels == labels)

    assert value("nimbus_lambda_invocations", "nimbus_lambda_invocations_total", mine) == 7
    assert value("nimbus_lambda_errors", "nimbus_lambda_errors_total", mine) == 2
    assert value("nimbus_lambda_duration_seconds", "nimbus_lambda_duration_seconds_count", mine) == 7
    assert value("nimbus_lambda_cold_starts", "nimbus_lambda_cold_starts_total", mine) >= 1
    assert value("nimbus_lambda_init_duration_seconds", "nimbus_lambda_init_duration_seconds_count", mine) >= 1
    assert families["nimbus_lambda_duration_seconds"].type == "histogram"
    states = {s.labels["state"]: s.value for s in families["nimbus_environments"].samples}
    assert set(states) == {"busy", "idle", "provisioned"} and states["idle"] >= 1
    assert "nimbus_templates_ready" in families and "nimbus_sqs_messages_visible" in families
    assert families["nimbus_async_events_queued"].samples[0].value >= 0


def test_botocore_speaking_smithy_rpc_v2_cbor(server, invoked):
    """botocore prefers awsJson 1.0 for CloudWatch; newer SDKs send the
    model's first protocol, CBOR. botocore's own CBOR serializer and parser
    speak it when asked to prefer it."""
    cbor_first = ("smithy-rpc-v2-cbor", "json", "rest-json", "rest-xml", "query", "ec2")
    with mock.patch("botocore.model.PRIORITY_ORDERED_SUPPORTED_PROTOCOLS", cbor_first):
        cw = aws_client(server, "cloudwatch")
        seen = []
        cw.meta.events.register("before-send", lambda request, **_: seen.append(request))
        point = stats(cw, invoked, "Invocations", Statistics=["Sum"])
        assert point["Sum"] == 7 and isinstance(point["Timestamp"], datetime.datetime)
        assert seen[-1].url.endswith("/service/GraniteServiceVersion20100801/operation/GetMetricStatistics")
        assert seen[-1].headers["smithy-protocol"] == b"rpc-v2-cbor"
        r = cw.get_metric_data(StartTime=utc(-10), EndTime=utc(1), MetricDataQueries=[
            {"Id": "e", "MetricStat": {"Metric": {"Namespace": NS, "MetricName": "Errors",
                                                  "Dimensions": fn_dims(invoked)}, "Period": 3600, "Stat": "Sum"}}])
        assert r["MetricDataResults"][0]["Values"] == [2.0]
        assert isinstance(r["MetricDataResults"][0]["Timestamps"][0], datetime.datetime)
        with pytest.raises(ClientError) as e:
            cw.get_metric_statistics(Namespace=NS, MetricName="Invocations", StartTime=utc(-10), EndTime=utc(0),
                                     Period=61, Statistics=["Sum"])
        assert error_code(e) == "InvalidParameterValue"


@pytest.fixture(scope="module")
def minutes(tmp_path_factory):
    """A server whose clock runs a minute per real second, and a function
    invoked once in each of three of its minutes: three datapoints a series."""
    epoch_ms = int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000)
    s = Server(tmp_path_factory.mktemp("minutes") / "data",
               args=["--test-clock-scale", "60", "--test-clock-epoch-ms", str(epoch_ms)]).start()

    def server_minute():
        now_ms = datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000
        return int(epoch_ms + (now_ms - epoch_ms) * 60) // 60_000

    try:
        lam = s.client()
        name = unique_name("paged")
        create(lam, name, CODE)
        wait_ready(lam, name)
        cw = aws_client(s, "cloudwatch")
        start = datetime.datetime.fromtimestamp(epoch_ms / 1000 - 3600, datetime.timezone.utc)

        def counted():
            end = datetime.datetime.fromtimestamp((server_minute() + 60) * 60, datetime.timezone.utc)
            r = cw.get_metric_statistics(Namespace=NS, MetricName="Invocations", Dimensions=fn_dims(name),
                                         StartTime=start, EndTime=end, Period=60, Statistics=["Sum"])
            return sum(p["Sum"] for p in r["Datapoints"])

        for i, payload in enumerate([{}, {"fail": True}, {}]):
            lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
            # The next invoke begins in a later minute than this one was
            # counted in: a loaded machine's invoke (a cold start) may take
            # more than one of the server's minutes, a real second.
            wait_for(lambda: counted() == i + 1, "the invocation counted")
            minute = server_minute()
            wait_for(lambda: server_minute() > minute, "the server's next minute")
        end = datetime.datetime.fromtimestamp((server_minute() + 60) * 60, datetime.timezone.utc)
        yield s, name, start, end
    finally:
        s.stop()


def paging_queries(name):
    def query(qid, metric, stat, namespace=NS):
        return {"Id": qid, "MetricStat": {"Metric": {"Namespace": namespace, "MetricName": metric,
                                                     "Dimensions": fn_dims(name)}, "Period": 60, "Stat": stat}}
    return [query("calls", "Invocations", "Sum"), query("errors", "Errors", "Sum"),
            query("none", "CPUUtilization", "Average", namespace="AWS/EC2"), query("slowest", "Duration", "Maximum")]


def merged(pages):
    """Each query's datapoints over all pages, in the order they came."""
    series = {}
    for page in pages:
        for r in page["MetricDataResults"]:
            s = series.setdefault(r["Id"], {"Timestamps": [], "Values": []})
            s["Timestamps"] += r["Timestamps"]
            s["Values"] += r["Values"]
    return series


@pytest.mark.parametrize("scan_by", ["TimestampDescending", "TimestampAscending"])
def test_get_metric_data_pages_by_max_datapoints(minutes, scan_by):
    server, name, start, end = minutes
    cw = aws_client(server, "cloudwatch")
    params = dict(MetricDataQueries=paging_queries(name), StartTime=start, EndTime=end, ScanBy=scan_by)
    whole = cw.get_metric_data(**params)
    assert "NextToken" not in whole
    assert all(r["StatusCode"] == "Complete" for r in whole["MetricDataResults"])
    full = merged([whole])
    assert full["calls"]["Values"] == [1.0, 1.0, 1.0] and sorted(full["errors"]["Values"]) == [0.0, 0.0, 1.0]
    assert full["none"]["Values"] == [] and len(full["slowest"]["Values"]) == 3
    ordered = sorted(full["calls"]["Timestamps"], reverse=scan_by == "TimestampDescending")
    assert full["calls"]["Timestamps"] == ordered and len(set(ordered)) == 3

    pages = list(cw.get_paginator("get_metric_data").paginate(MaxDatapoints=2, **params))
    # Nine datapoints, two a page; the query a page ends in is partial.
    assert [sum(len(r["Values"]) for r in p["MetricDataResults"]) for p in pages] == [2, 2, 2, 2, 1]
    statuses = [[(r["Id"], r["StatusCode"]) for r in p["MetricDataResults"]] for p in pages]
    assert statuses == [
        [("calls", "PartialData")],
        [("calls", "Complete"), ("errors", "PartialData")],
        [("errors", "Complete"), ("none", "Complete")],
        [("slowest", "PartialData")],
        [("slowest", "Complete")],
    ]
    assert merged(pages) == full

    # A token goes with the query it came from.
    first = cw.get_metric_data(MaxDatapoints=2, **params)
    other = dict(params, StartTime=start - datetime.timedelta(minutes=1))
    with pytest.raises(ClientError) as e:
        cw.get_metric_data(MaxDatapoints=2, NextToken=first["NextToken"], **other)
    assert error_code(e) == "InvalidNextToken" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_get_metric_data_pages_in_cbor_too(minutes):
    server, name, start, end = minutes
    cbor_first = ("smithy-rpc-v2-cbor", "json", "rest-json", "rest-xml", "query", "ec2")
    with mock.patch("botocore.model.PRIORITY_ORDERED_SUPPORTED_PROTOCOLS", cbor_first):
        cw = aws_client(server, "cloudwatch")
        seen = []
        cw.meta.events.register("before-send", lambda request, **_: seen.append(request))
        params = dict(MetricDataQueries=paging_queries(name), StartTime=start, EndTime=end, MaxDatapoints=4)
        pages, token = [], None
        while True:
            page = cw.get_metric_data(**params, **({"NextToken": token} if token else {}))
            pages.append(page)
            token = page.get("NextToken")
            if not token:
                break
        assert all(r.headers["smithy-protocol"] == b"rpc-v2-cbor" for r in seen)
        assert [sum(len(r["Values"]) for r in p["MetricDataResults"]) for p in pages] == [4, 4, 1]
        assert merged(pages) == merged([cw.get_metric_data(**dict(params, MaxDatapoints=100))])
        with pytest.raises(ClientError) as e:
            cw.get_metric_data(**params, NextToken="0.-.0000")
        assert error_code(e) == "InvalidNextToken"


def test_recently_active_lists_only_the_last_three_hours(tmp_path):
    """ListMetrics' RecentlyActive=PT3H leaves out a metric whose data is
    older; the server's clock runs an hour per real second."""
    epoch_ms = int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000)
    s = Server(tmp_path / "data", args=["--test-clock-scale", "3600", "--test-clock-epoch-ms", str(epoch_ms)]).start()

    def server_hours():
        now_ms = datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000
        return (now_ms - epoch_ms) * 3600 / 3_600_000

    try:
        lam, cw = s.client(), aws_client(s, "cloudwatch")
        name = unique_name("quiet")
        create(lam, name, CODE)
        wait_ready(lam, name)
        lam.invoke(FunctionName=name, Payload=b"{}")
        dims = [{"Name": "FunctionName", "Value": name}]
        listed = lambda **kw: cw.list_metrics(Namespace=NS, MetricName="Invocations", Dimensions=dims, **kw)["Metrics"]
        assert len(listed(RecentlyActive="PT3H")) == 1
        invoked_at = server_hours()
        wait_for(lambda: server_hours() > invoked_at + 3.5, "three and a half server hours")
        assert listed(RecentlyActive="PT3H") == []
        assert len(listed()) == 1, "still listed without the filter"
    finally:
        s.stop()
