"""EventBridge Scheduler end to end: schedules and groups through boto3's
`scheduler` client and the aws CLI, AWS's errors for bad input, and
firings observed in the target function: an `at()` schedule fires once and
deletes itself, a rate schedule fires on its cadence, a firing whose
function is missing is retried, and a node killed with -9 fires what it
missed once on restart.

Recurring schedules run on the node's test clock (`--test-clock-scale 30`:
a schedule minute is two real seconds) so that minutes pass in seconds;
one-time schedules use the real clock."""

import concurrent.futures
import datetime
import json
import re
import signal
import time
from zoneinfo import ZoneInfo

import pytest
from botocore.exceptions import ClientError

from conftest import (ACCOUNT, REGION, ROLE, Server, aws_client, aws_json, error_code, function_log, make_zip,
                      printed_events, sqs_client, unique_name, wait_for)

SCHEDULER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/scheduler-role"
# A schedule minute is two real seconds: a node stalled for a second (a slow
# fsync on a busy machine) is still on time.
SCALE = 30

RECORDER = '''
import json
import time

def handler(event, context):
    print("EVENT " + json.dumps(dict(event, received=time.time())))
'''


def scheduler(server):
    return aws_client(server, "scheduler")



def function_arn(name):
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def target(name, **kw):
    return {"Arn": function_arn(name), "RoleArn": SCHEDULER_ROLE, **kw}


def create_function(server, code=RECORDER):
    name = unique_name("schedfn")
    server.client().create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                                    Code={"ZipFile": make_zip({"app.py": code})})
    return name



def log_lines(server, needle):
    plain = re.sub(r"\x1b\[[0-9;]*m", "", server.output())
    return [line for line in plain.splitlines() if needle in line]


def at_expression(when, tz="UTC"):
    return "at(" + when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%dT%H:%M:%S") + ")"


def iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- API, on the shared server -------------------------------------------------------------------------------


def test_schedules_and_groups_crud_with_boto3_and_the_cli(server):
    sch = scheduler(server)
    group = unique_name("grp")
    group_arn = sch.create_schedule_group(Name=group, Tags=[{"Key": "team", "Value": "a"}])["ScheduleGroupArn"]
    assert group_arn == f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule-group/{group}"
    with pytest.raises(ClientError) as e:
        sch.create_schedule_group(Name=group)
    assert error_code(e) == "ConflictException"
    got = sch.get_schedule_group(Name=group)
    assert (got["Arn"], got["Name"], got["State"]) == (group_arn, group, "ACTIVE") and "CreationDate" in got
    names = [g["Name"] for g in sch.list_schedule_groups()["ScheduleGroups"]]
    assert "default" in names and group in names and names == sorted(names)
    paged = [g["Name"] for p in sch.get_paginator("list_schedule_groups").paginate(PaginationConfig={"PageSize": 1})
             for g in p["ScheduleGroups"]]
    assert paged == names
    # A token that is none of ours is refused, as ListSchedules refuses one
    # (it was read as a name to list after, silently).
    with pytest.raises(ClientError) as e:
        sch.list_schedule_groups(MaxResults=1, NextToken="garbage")
    assert error_code(e) == "ValidationException"

    code, out, err = aws_json(server, "scheduler", "create-schedule", "--name", "nightly", "--group-name", group,
                         "--schedule-expression", "cron(0 3 * * ? *)", "--schedule-expression-timezone",
                         "Europe/Berlin", "--flexible-time-window", '{"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15}',
                         "--target", json.dumps(target("fn", Input='{"job": "nightly"}')),
                         "--description", "every night")
    assert code == 0, err
    arn = f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/{group}/nightly"
    assert out == {"ScheduleArn": arn}
    s = sch.get_schedule(Name="nightly", GroupName=group)
    assert s["Arn"] == arn and s["GroupName"] == group and s["State"] == "ENABLED"
    assert s["ScheduleExpressionTimezone"] == "Europe/Berlin" and s["Description"] == "every night"
    assert s["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15}
    assert s["Target"] == {"Arn": function_arn("fn"), "RoleArn": SCHEDULER_ROLE, "Input": '{"job": "nightly"}',
                           "RetryPolicy": {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}}
    with pytest.raises(ClientError) as e:
        sch.create_schedule(Name="nightly", GroupName=group, ScheduleExpression="rate(5 minutes)",
                            Target=target("fn"), FlexibleTimeWindow={"Mode": "OFF"})
    assert error_code(e) == "ConflictException"
    assert e.value.response["Error"]["Message"] == "Schedule nightly already exists."
    # A create retried with its ClientToken (an SDK's retry after a lost
    # answer) answers as the first did; another token is another create.
    retried = unique_name("retried")
    for _ in range(2):
        assert sch.create_schedule(Name=retried, GroupName=group, ScheduleExpression="rate(5 minutes)",
                                   Target=target("fn"), FlexibleTimeWindow={"Mode": "OFF"},
                                   ClientToken="token-1")["ScheduleArn"].endswith(f"/{group}/{retried}")
        assert sch.create_schedule_group(Name=f"{group}-t", ClientToken="token-2")["ScheduleGroupArn"].endswith(
            f"schedule-group/{group}-t")
    with pytest.raises(ClientError) as e:
        sch.create_schedule(Name=retried, GroupName=group, ScheduleExpression="rate(5 minutes)",
                            Target=target("fn"), FlexibleTimeWindow={"Mode": "OFF"}, ClientToken="token-3")
    assert error_code(e) == "ConflictException"
    with pytest.raises(ClientError) as e:
        sch.create_schedule_group(Name=f"{group}-t", ClientToken="token-3")
    assert error_code(e) == "ConflictException"
    sch.delete_schedule(Name=retried, GroupName=group)
    sch.delete_schedule_group(Name=f"{group}-t")

    # UpdateSchedule replaces everything: what it does not name is gone.
    sch.update_schedule(Name="nightly", GroupName=group, ScheduleExpression="rate(2 hours)", State="DISABLED",
                        Target=target("fn", RetryPolicy={"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600},
                                      DeadLetterConfig={"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"}),
                        FlexibleTimeWindow={"Mode": "OFF"})
    s = sch.get_schedule(Name="nightly", GroupName=group)
    assert s["ScheduleExpression"] == "rate(2 hours)" and s["State"] == "DISABLED" and "Description" not in s
    assert s["ScheduleExpressionTimezone"] == "UTC" and s["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert s["Target"]["RetryPolicy"] == {"MaximumEventAgeInSeconds": 600, "MaximumRetryAttempts": 3}
    assert s["Target"]["DeadLetterConfig"] == {"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"}

    for n in ("alpha-1", "alpha-2", "beta"):
        sch.create_schedule(Name=n, GroupName=group, ScheduleExpression="rate(1 day)", Target=target("fn"),
                            FlexibleTimeWindow={"Mode": "OFF"})
    listed = sch.list_schedules(GroupName=group)["Schedules"]
    assert [x["Name"] for x in listed] == ["alpha-1", "alpha-2", "beta", "nightly"]
    assert listed[0]["Target"] == {"Arn": function_arn("fn")} and listed[0]["GroupName"] == group
    assert [x["Name"] for x in sch.list_schedules(GroupName=group, NamePrefix="alpha")["Schedules"]] == \
        ["alpha-1", "alpha-2"]
    assert [x["Name"] for x in sch.list_schedules(GroupName=group, State="DISABLED")["Schedules"]] == ["nightly"]
    page = sch.list_schedules(GroupName=group, MaxResults=3)
    rest = sch.list_schedules(GroupName=group, MaxResults=3, NextToken=page["NextToken"])
    assert [x["Name"] for x in page["Schedules"] + rest["Schedules"]] == ["alpha-1", "alpha-2", "beta", "nightly"]
    assert "NextToken" not in rest

    # Tags belong to groups.
    sch.tag_resource(ResourceArn=group_arn, Tags=[{"Key": "env", "Value": "prod"}])
    code, out, err = aws_json(server, "scheduler", "untag-resource", "--resource-arn", group_arn, "--tag-keys", "team")
    assert code == 0, err
    assert sch.list_tags_for_resource(ResourceArn=group_arn)["Tags"] == [{"Key": "env", "Value": "prod"}]

    sch.delete_schedule(Name="beta", GroupName=group)
    with pytest.raises(ClientError) as e:
        sch.get_schedule(Name="beta", GroupName=group)
    assert error_code(e) == "ResourceNotFoundException"
    assert e.value.response["Error"]["Message"] == "Schedule beta does not exist."
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    # Deleting a group deletes its schedules.
    sch.delete_schedule_group(Name=group)
    for call in (lambda: sch.get_schedule_group(Name=group), lambda: sch.get_schedule(Name="nightly", GroupName=group),
                 lambda: sch.list_schedules(GroupName=group)):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "ResourceNotFoundException"
    assert e.value.response["Error"]["Message"] == f"Schedule group {group} does not exist."
    with pytest.raises(ClientError) as e:
        sch.create_schedule(Name="x", GroupName=group, ScheduleExpression="rate(1 day)", Target=target("fn"),
                            FlexibleTimeWindow={"Mode": "OFF"})
    assert error_code(e) == "ResourceNotFoundException"


@pytest.mark.parametrize("expression", [
    "cron(0 10 * * * *)",          # neither day field is ?
    "cron(0 10 ? * ? *)",          # both are
    "cron(0 10 * * ?)",            # five fields
    "cron(0 10 * * ? 2200)",       # past 2199
    "cron(0 25 * * ? *)",          # no hour 25
    "rate(0 minutes)",
    "rate(30 seconds)",            # nothing faster than a minute
    "rate(1.5 hours)",
    "at(2030-02-30T10:00:00)",
    "at(2030-01-01 10:00:00)",
    "every 5 minutes",
])
def test_bad_expressions_are_validation_errors_and_create_nothing(server, expression):
    sch = scheduler(server)
    name = unique_name("bad")
    with pytest.raises(ClientError) as e:
        sch.create_schedule(Name=name, ScheduleExpression=expression, Target=target("fn"),
                            FlexibleTimeWindow={"Mode": "OFF"})
    assert error_code(e) == "ValidationException"
    assert e.value.response["Error"]["Message"] == f"Invalid Schedule Expression {expression}."
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert not sch.list_schedules(NamePrefix=name)["Schedules"]


def test_other_bad_input_gets_aws_errors(server):
    sch = scheduler(server)
    ok = dict(ScheduleExpression="rate(1 hour)", Target=target("fn"), FlexibleTimeWindow={"Mode": "OFF"})
    cases = [
        # The model's constraints, with AWS's message.
        (dict(ok, Name="bad name"), "Member must satisfy regular expression pattern: [0-9a-zA-Z-_.]+"),
        (dict(ok, Name=unique_name("b"), Target=target("fn", RetryPolicy={"MaximumRetryAttempts": 186})),
         "Member must have value less than or equal to 185"),
        (dict(ok, Name=unique_name("b"), Target=target("fn", DeadLetterConfig={"Arn": "arn:aws:sns:us-east-1:123456789012:t"})),
         "Member must satisfy regular expression pattern"),
        (dict(ok, Name=unique_name("b"), FlexibleTimeWindow={"Mode": "SOMETIMES"}),
         "Member must satisfy enum value set: [OFF, FLEXIBLE]"),
        # The rules beyond it.
        (dict(ok, Name=unique_name("b"), ScheduleExpressionTimezone="Mars/Olympus"),
         "Invalid ScheduleExpressionTimezone Mars/Olympus."),
        (dict(ok, Name=unique_name("b"), FlexibleTimeWindow={"Mode": "FLEXIBLE"}),
         "MaximumWindowInMinutes is required"),
        (dict(ok, Name=unique_name("b"), StartDate=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)),
         "The StartDate you specify cannot be earlier than 5 minutes ago."),
        (dict(ok, Name=unique_name("b"), Target={"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:q", "RoleArn": SCHEDULER_ROLE}),
         "Lambda function targets only"),
        (dict(ok, Name=unique_name("b"), Target=target("fn", SqsParameters={"MessageGroupId": "g"})),
         "Target SqsParameters is not supported"),
        (dict(ok, Name=unique_name("b"), KmsKeyArn=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k1"),
         "KmsKeyArn is not supported"),
    ]
    for params, message in cases:
        with pytest.raises(ClientError) as e:
            sch.create_schedule(**params)
        assert error_code(e) == "ValidationException", params
        assert message in e.value.response["Error"]["Message"], (params, e.value.response["Error"]["Message"])
    with pytest.raises(ClientError) as e:
        sch.delete_schedule_group(Name="default")
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        sch.update_schedule(Name=unique_name("missing"), **ok)
    assert error_code(e) == "ResourceNotFoundException"
    code, _, err = aws_json(server, "scheduler", "create-schedule", "--name", unique_name("b"), "--schedule-expression",
                       "cron(0 10 * * * *)", "--target", json.dumps(target("fn")), "--flexible-time-window",
                       '{"Mode": "OFF"}')
    assert code != 0 and "ValidationException" in err and "Invalid Schedule Expression cron(0 10 * * * *)." in err


# --- firings on the real clock ---------------------------------------------------------------------------------


def test_an_at_schedule_fires_once_in_its_time_zone_and_deletes_itself(server):
    sch = scheduler(server)
    fn = create_function(server)
    name = unique_name("once")
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(seconds=3)
    arn = sch.create_schedule(
        Name=name, ScheduleExpression=at_expression(when, "Asia/Tokyo"), ScheduleExpressionTimezone="Asia/Tokyo",
        ActionAfterCompletion="DELETE", FlexibleTimeWindow={"Mode": "OFF"},
        Target=target(fn, Input=json.dumps({
            "schedule": "<aws.scheduler.schedule-arn>", "time": "<aws.scheduler.scheduled-time>",
            "execution": "<aws.scheduler.execution-id>", "attempt": "<aws.scheduler.attempt-number>",
            "kept": "verbatim <aws.other>"})),
    )["ScheduleArn"]
    assert sch.get_schedule(Name=name)["State"] == "ENABLED"

    events = wait_for(lambda: printed_events(server, fn), "the at() schedule to invoke its function", 30)
    ev = events[0]
    # Fired within a second of its time; the rest is the function's cold start.
    assert 0 <= ev["received"] - when.timestamp() < 2, ev["received"] - when.timestamp()
    assert ev["schedule"] == arn and ev["time"] == iso(when.timestamp()) and ev["attempt"] == "1"
    assert ev["kept"] == "verbatim <aws.other>" and re.fullmatch(r"[0-9a-f-]{36}", ev["execution"])

    # The firing and the deletion commit together: once it is gone, nothing
    # else can fire, and the function ran exactly once.
    with pytest.raises(ClientError) as e:
        sch.get_schedule(Name=name)
    assert error_code(e) == "ResourceNotFoundException"
    wait_for(lambda: reported(server, fn), "the invocation to end")
    assert len(printed_events(server, fn)) == 1


def test_a_schedule_without_input_sends_the_default_notification(server):
    """EventBridge Scheduler's "default notification" (the target got `{}`),
    which event classes such as Powertools' EventBridgeEvent parse."""
    sch = scheduler(server)
    fn = create_function(server)
    name = unique_name("plain")
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(seconds=2)
    arn = sch.create_schedule(Name=name, ScheduleExpression=at_expression(when, "UTC"),
                              FlexibleTimeWindow={"Mode": "OFF"}, Target=target(fn))["ScheduleArn"]
    [ev] = wait_for(lambda: printed_events(server, fn), "the schedule to invoke its function", 30)
    ev.pop("received")
    assert re.fullmatch(r"[0-9a-f-]{36}", ev.pop("id")), ev
    assert ev == {"version": "0", "detail-type": "Scheduled Event", "source": "aws.scheduler", "account": ACCOUNT,
                  "time": iso(when.timestamp()), "region": REGION, "resources": [arn], "detail": "{}"}


def reported(server, fn):
    events = function_log(server, fn)
    return any(e["message"].startswith("REPORT") for e in events)


def test_a_firing_whose_function_is_missing_is_retried_until_it_exists_or_its_policy_is_spent(server):
    sch = scheduler(server)
    fn = unique_name("later")
    name, doomed = unique_name("retry"), unique_name("doomed")
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(seconds=2)
    arn = sch.create_schedule(Name=name, ScheduleExpression=at_expression(when), FlexibleTimeWindow={"Mode": "OFF"},
                              Target=target(fn, Input='{"attempt": "<aws.scheduler.attempt-number>"}'))["ScheduleArn"]
    sqs = sqs_client(server)
    dlq_url = sqs.create_queue(QueueName=unique_name("schedule-dlq"))["QueueUrl"]
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    never = unique_name("never")
    doomed_arn = sch.create_schedule(
        Name=doomed, ScheduleExpression=at_expression(when), FlexibleTimeWindow={"Mode": "OFF"},
        Target=target(never, Input='{"n": "<aws.scheduler.attempt-number>"}',
                      RetryPolicy={"MaximumRetryAttempts": 1, "MaximumEventAgeInSeconds": 60},
                      DeadLetterConfig={"Arn": dlq}))["ScheduleArn"]
    wait_for(lambda: any(arn in line for line in log_lines(server, "will retry")), "a failed first attempt", 30)
    create_function_named(server, fn)
    events = wait_for(lambda: printed_events(server, fn), "a retry to invoke the function once it exists", 60)
    assert int(events[0]["attempt"]) >= 2
    # Without ActionAfterCompletion DELETE the completed schedule stays.
    assert sch.get_schedule(Name=name)["Arn"] == arn
    sch.delete_schedule(Name=name)

    # One retry allowed: the second attempt fails for good and its input goes
    # to the dead-letter queue, with what went wrong.
    got = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=20, MessageAttributeNames=["All"])["Messages"]
    assert len(got) == 1 and json.loads(got[0]["Body"]) == {"n": "2"}
    attrs = {k: v["StringValue"] for k, v in got[0]["MessageAttributes"].items()}
    assert (attrs["SCHEDULE_ARN"], attrs["TARGET_ARN"], attrs["RETRY_ATTEMPTS"]) == (doomed_arn, target(never)["Arn"], "1")
    assert attrs["EXHAUSTED_RETRY_CONDITION"] == "MaximumRetryAttempts" and never in attrs["ERROR_MESSAGE"]
    assert len([line for line in log_lines(server, "will retry") if doomed_arn in line]) == 1


def test_a_firing_too_old_to_invoke_goes_to_the_dead_letter_queue(server):
    sch = scheduler(server)
    sqs = sqs_client(server)
    dlq_url = sqs.create_queue(QueueName=unique_name("schedule-old-dlq"))["QueueUrl"]
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    fn = create_function_named(server, unique_name("never-run"))
    # Due long ago, as after a node was down: past its age, so never invoked.
    arn = sch.create_schedule(
        Name=unique_name("old"), ScheduleExpression="at(2020-01-01T00:00:00)", FlexibleTimeWindow={"Mode": "OFF"},
        Target=target(fn, Input='{"late": true}', RetryPolicy={"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 60},
                      DeadLetterConfig={"Arn": dlq}))["ScheduleArn"]
    got = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=20, MessageAttributeNames=["All"])["Messages"]
    assert len(got) == 1 and json.loads(got[0]["Body"]) == {"late": True}
    attrs = {k: v["StringValue"] for k, v in got[0]["MessageAttributes"].items()}
    assert (attrs["SCHEDULE_ARN"], attrs["EXHAUSTED_RETRY_CONDITION"], attrs["RETRY_ATTEMPTS"]) == (
        arn, "MaximumEventAgeInSeconds", "0")
    assert printed_events(server, fn) == []


def test_an_input_that_is_not_json_fails_the_firing_not_the_function(server):
    """Lambda's Invoke refuses a payload that is not JSON, so the firing
    fails and goes to the schedule's dead-letter queue; it reached the
    function before, which failed in its runtime, away from the schedule."""
    sch = scheduler(server)
    sqs = sqs_client(server)
    dlq_url = sqs.create_queue(QueueName=unique_name("schedule-text-dlq"))["QueueUrl"]
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    fn = create_function_named(server, unique_name("text-input"))
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(seconds=1)
    arn = sch.create_schedule(
        Name=unique_name("text"), ScheduleExpression=at_expression(when), FlexibleTimeWindow={"Mode": "OFF"},
        Target=target(fn, Input="hello plain", RetryPolicy={"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60},
                      DeadLetterConfig={"Arn": dlq}))["ScheduleArn"]
    got = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=20, MessageAttributeNames=["All"])["Messages"]
    assert len(got) == 1 and got[0]["Body"] == "hello plain"
    attrs = {k: v["StringValue"] for k, v in got[0]["MessageAttributes"].items()}
    assert attrs["SCHEDULE_ARN"] == arn and "InvalidRequestContentException" in attrs["ERROR_MESSAGE"], attrs
    # Never invoked: no START, no REPORT (its handler would not have printed either way).
    assert function_log(server, fn) == []


def create_function_named(server, name):
    server.client().create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                                    Code={"ZipFile": make_zip({"app.py": RECORDER})})
    return name


# --- recurring schedules on the test clock ----------------------------------------------------------------------


MARKER = '''
import json

def handler(event, context):
    with open({path!r}, "a") as f:
        f.write(json.dumps(event) + "\\n")
'''


class ScheduleClock:
    """The node's schedule clock: SCALE times real time from `epoch`."""

    def __init__(self):
        self.epoch_ms = int(time.time() * 1000)

    def args(self):
        return ["--isolation", "process", "--test-clock-scale", str(SCALE), "--test-clock-epoch-ms",
                str(self.epoch_ms)]

    def now(self):
        real = time.time() * 1000
        return (self.epoch_ms + (real - self.epoch_ms) * SCALE) / 1000


def calls(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def epoch(stamp):
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def test_a_rate_schedule_fires_on_its_cadence(tmp_path):
    clock = ScheduleClock()
    srv = Server(tmp_path / "data", args=clock.args()).start()
    try:
        marks = tmp_path / "calls"
        fn = create_function(srv, MARKER.format(path=str(marks)))
        sch = scheduler(srv)
        sch.create_schedule(Name="every-minute", ScheduleExpression="rate(1 minute)", FlexibleTimeWindow={"Mode": "OFF"},
                            Target=target(fn, Input='{"time": "<aws.scheduler.scheduled-time>"}'))
        wait_for(lambda: calls(marks), "the first firing", 30)
        # A stalled node (a starved timer, a slow disk) is still running: it
        # fires the times it passed late, none skipped. The stall is what is
        # under test, not a synchronisation.
        srv.proc.send_signal(signal.SIGSTOP)
        time.sleep(3 * 60 / SCALE)
        srv.proc.send_signal(signal.SIGCONT)

        def first_four():
            # Firings are async invokes, so they may land out of order: wait
            # for the first four due times, not for any four.
            times = sorted(epoch(c["time"]) for c in calls(marks))
            return len(times) >= 4 and times[:4] == [times[0] + 60 * k for k in range(4)] and times

        times = wait_for(first_four, "four consecutive firings of rate(1 minute), none skipped", 30)
        assert len(set(times)) == len(times), f"a time fired twice: {times}"
        sch.update_schedule(Name="every-minute", ScheduleExpression="rate(1 minute)", State="DISABLED",
                            FlexibleTimeWindow={"Mode": "OFF"}, Target=target(fn))
        assert sch.get_schedule(Name="every-minute")["State"] == "DISABLED"
        assert not log_lines(srv, "missed due times"), "a running node misses nothing"
    finally:
        srv.stop()


def test_a_node_killed_with_minus_9_fires_a_missed_schedule_once(tmp_path):
    clock = ScheduleClock()
    data, marks = tmp_path / "data", tmp_path / "calls"
    first = Server(data, args=clock.args()).start()
    try:
        fn = create_function(first, MARKER.format(path=str(marks)))
        start = int(clock.now()) + 60
        scheduler(first).create_schedule(
            Name="minutely", ScheduleExpression="rate(1 minute)", FlexibleTimeWindow={"Mode": "OFF"},
            StartDate=datetime.datetime.fromtimestamp(start, datetime.timezone.utc),
            Target=target(fn, Input='{"time": "<aws.scheduler.scheduled-time>"}'))
    finally:
        first.kill()
    assert not calls(marks), "killed before its start date"
    # The node is down while (schedule) minutes pass: this wait is the
    # downtime under test, not a synchronisation.
    while clock.now() < start + 3 * 60:
        time.sleep(0.1)
    before = clock.now()
    second = Server(data, args=clock.args()).start()
    try:
        got = wait_for(lambda: len(calls(marks)) >= 2 and calls(marks), "the missed firing and the next", 30)
        times = sorted(epoch(c["time"]) for c in got)
        assert times[0] >= start + 3 * 60, f"the latest missed time is fired, not the first: {times}"
        assert sum(t <= before for t in times) <= 1, f"one firing for the downtime, not a storm: {times}"
        assert all(b - a == 60 for a, b in zip(times, times[1:])), times
        warned = log_lines(second, "missed due times")
        assert len(warned) == 1 and "schedule/default/minutely" in warned[0], warned
        assert int(re.search(r"skipped=(\d+)", warned[0]).group(1)) >= 3, warned
    finally:
        second.stop()


def test_a_completed_schedule_deleted_after_completion_delivers_every_retrying_firing(tmp_path):
    """ActionAfterCompletion DELETE waits for every firing: three due times
    fail (no function yet) and wait for retries; the first delivered after
    the schedule completed deleted it with the other two's retries, which
    were then neither delivered nor dead-lettered."""
    clock = ScheduleClock()
    srv = Server(tmp_path / "data", args=clock.args()).start()
    try:
        marks = tmp_path / "calls"
        fn = unique_name("late")
        start = int(clock.now()) + 60
        sch = scheduler(srv)
        arn = sch.create_schedule(
            Name="three-times", ScheduleExpression="rate(1 minute)", FlexibleTimeWindow={"Mode": "OFF"},
            StartDate=datetime.datetime.fromtimestamp(start, datetime.timezone.utc),
            EndDate=datetime.datetime.fromtimestamp(start + 150, datetime.timezone.utc),
            ActionAfterCompletion="DELETE",
            Target=target(fn, Input='{"time": "<aws.scheduler.scheduled-time>"}'))["ScheduleArn"]

        def first_attempts():
            return len([line for line in log_lines(srv, "will retry") if arn in line and "attempt=1 " in line])
        wait_for(lambda: first_attempts() == 3, "the three due times to fail once each", 60)
        srv.client().create_function(FunctionName=fn, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                                     Code={"ZipFile": make_zip({"app.py": MARKER.format(path=str(marks))})})

        def gone():
            try:
                sch.get_schedule(Name="three-times")
                return False
            except ClientError as e:
                return e.response["Error"]["Code"] == "ResourceNotFoundException"
        got = wait_for(lambda: len(calls(marks)) >= 3 and calls(marks), "every firing to be delivered", 60)
        assert sorted(epoch(c["time"]) for c in got) == [start + 60 * k for k in range(3)]
        wait_for(gone, "the schedule to delete itself once its last firing was delivered", 30)
    finally:
        srv.stop()


def test_an_account_has_500_schedule_groups_at_most(tmp_path):
    srv = Server(tmp_path / "data").start()
    try:
        sch = scheduler(srv)
        # The default group is one of them.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: sch.create_schedule_group(Name=f"g{i:03d}"), range(499)))
        with pytest.raises(ClientError) as e:
            sch.create_schedule_group(Name="one-too-many")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
        assert error_code(e) == "ServiceQuotaExceededException"
        assert error_code(pytest.raises(ClientError, sch.create_schedule_group, Name="g000")) == "ConflictException"
        sch.delete_schedule_group(Name="g000")
        sch.create_schedule_group(Name="one-too-many")
        names = [g["Name"] for p in sch.get_paginator("list_schedule_groups").paginate() for g in p["ScheduleGroups"]]
        assert len(names) == 500 and "default" in names and "g000" not in names
    finally:
        srv.stop()
