"""Inside an ECS task and around it: the task metadata endpoint v4 and the
task-role credentials endpoint answering inside the task (busybox wget
from the container), the node's API reachable from it, an AWS SDK
(botocore, layered on the image-function tests' Python image) calling
Nimbus as the task, tasks reaching each other's published ports at their
private addresses and only those, the `awslogs` log driver writing each
container's lines to the log store (FilterLogEvents), a missing log group
failing the start, metering rows that add up, `nimbus task
list|logs|stop`, and stopped tasks deleted an hour after they stop (on a
fast test clock), and a task's bind-mount volumes. Images are test_ecs's busybox recipe, but for the SDK's."""

import http.client
import json
import math
import os
import shutil
import signal
import sqlite3
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import botocore.exceptions
import pytest

from conftest import ACCOUNT, REGION, Server, aws_client, create, host_pids, nimbus_cli, unique_name, wait_for
from test_ecs import CAPACITY, NETWORK, busybox, busybox_layout, ecs, node, register, run, running, stopped  # noqa: F401
from test_ecs import refused as refused_with
from test_image_functions import push, python_layout, run as sh  # noqa: F401

ROLE = "arn:aws:iam::000000000000:role/task-role"

# Prints what the endpoints answer, one JSON document per line, then a line
# per check that may fail (wget's own error text) and the environment.
PROBE = r"""
echo "creds $(wget -q -O - --header "Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN" $AWS_CONTAINER_CREDENTIALS_FULL_URI)"
echo "task $(wget -q -O - $ECS_CONTAINER_METADATA_URI_V4/task)"
echo "container $(wget -q -O - $ECS_CONTAINER_METADATA_URI_V4)"
wget -q -O - --header "Authorization: wrong" $AWS_CONTAINER_CREDENTIALS_FULL_URI || echo "wrong token refused"
wget -q -O - $AWS_ENDPOINT_URL/2015-03-31/functions 2>&1 | head -1 | sed 's/^/api /'
echo "env region=$AWS_REGION default=$AWS_DEFAULT_REGION greeting=$GREETING mine=$MINE"
echo "to stderr" >&2
"""


@pytest.fixture(scope="module")
def logs(node):
    return aws_client(node, "logs")


def awslogs(group, prefix="app", create=None):
    options = {"awslogs-group": group, "awslogs-region": REGION, "awslogs-stream-prefix": prefix}
    if create is not None:
        options["awslogs-create-group"] = create
    return {"logDriver": "awslogs", "options": options}


def lines(logs, group, stream):
    events = logs.filter_log_events(logGroupName=group, logStreamNames=[stream])["events"]
    return [e["message"] for e in events]


def probe_task(ecs, logs, busybox, group):
    probe = {"name": "probe", "image": busybox, "entryPoint": ["/bin/sh", "-c", PROBE],
             "environment": [{"name": "MINE", "value": "set"}], "logConfiguration": awslogs(group)}
    family = register(ecs, containers=[probe], taskRoleArn=ROLE)["family"]
    arn = run(ecs, family)["tasks"][0]["taskArn"]
    return arn, f"app/probe/{arn.rsplit('/', 1)[1]}"


def test_endpoints_answer_inside_the_task_and_awslogs_keeps_its_lines(node, ecs, logs, busybox):
    group = unique_name("/ecs/probe")
    logs.create_log_group(logGroupName=group)
    arn, stream = probe_task(ecs, logs, busybox, group)
    done = stopped(ecs, arn)
    assert done["stopCode"] == "EssentialContainerExited" and done["containers"][0]["exitCode"] == 0, done
    got = wait_for(lambda: (lambda ls: ls if any(l == "to stderr" for l in ls) else None)(lines(logs, group, stream)),
                   "the probe's lines in the log store")
    by_kind = {l.split(" ", 1)[0]: l.split(" ", 1)[1] if " " in l else "" for l in got}
    creds = json.loads(by_kind["creds"])
    assert set(creds) == {"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "RoleArn"}
    assert creds["RoleArn"] == ROLE and creds["Expiration"].endswith("Z")
    task = json.loads(by_kind["task"])
    assert task["TaskARN"] == arn and task["LaunchType"] == "FARGATE"
    assert task["Family"] == done["taskDefinitionArn"].rsplit("/", 1)[1].split(":")[0]
    assert task["Limits"] == {"CPU": 0.25, "Memory": 512}
    assert [c["Name"] for c in task["Containers"]] == ["probe"]
    (eni,) = done["attachments"]
    address = {d["name"]: d["value"] for d in eni["details"]}["privateIPv4Address"]
    assert task["Containers"][0]["Networks"] == [{"NetworkMode": "awsvpc", "IPv4Addresses": [address]}]
    me = json.loads(by_kind["container"])
    assert me["ContainerARN"] == done["containers"][0]["containerArn"]
    assert me["LogDriver"] == "awslogs" and me["Labels"]["com.amazonaws.ecs.task-arn"] == arn
    assert "wrong token refused" in got
    # The node's API answers from inside (unsigned, so refused by it).
    assert by_kind["api"].startswith("wget: server returned error: HTTP/1.1 403"), by_kind["api"]
    assert by_kind["env"] == f"region={REGION} default={REGION} greeting=from-image mine=set"
    # The lines are kept after the task stopped, in the stream AWS names.
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == [stream]
    # The credentials the task got call Nimbus as the task: its data
    # services, not ECS's control plane.
    session = boto3.session.Session(aws_access_key_id=creds["AccessKeyId"],
                                    aws_secret_access_key=creds["SecretAccessKey"],
                                    aws_session_token=creds["Token"], region_name=REGION)
    as_task = session.client("logs", endpoint_url=node.endpoint)
    assert [s["logStreamName"] for s in as_task.describe_log_streams(logGroupName=group)["logStreams"]] == [stream]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        session.client("ecs", endpoint_url=node.endpoint).describe_tasks(tasks=[arn])
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert e.value.response["Error"]["Message"].startswith(f"User: {arn} is not authorized to perform: ecs:DescribeTasks")


# Prints who the container runs as, whether its root takes a write, and
# its open-files limits.
WHO = r"""
echo "id $(id -u):$(id -g)"
if (echo x > /written) 2>/dev/null && [ "$(cat /written)" = x ]; then echo "root writable"; else echo "root read-only"; fi
echo "nofile $(ulimit -S -n)/$(ulimit -H -n)"
"""


def test_user_ulimits_and_a_read_only_root_apply(ecs, logs, busybox):
    group = unique_name("/ecs/who")
    logs.create_log_group(logGroupName=group)
    base = {"image": busybox, "entryPoint": ["/bin/sh", "-c", WHO], "logConfiguration": awslogs(group)}
    named = dict(base, name="named", essential=False, user="app", readonlyRootFilesystem=True,
                 ulimits=[{"name": "nofile", "softLimit": 256, "hardLimit": 512}])
    numeric = dict(base, name="numeric", essential=False, user="2000:staff")
    # The essential one runs last, so that the task stops after all three.
    plain = dict(base, name="plain", dependsOn=[{"containerName": "named", "condition": "COMPLETE"},
                                                {"containerName": "numeric", "condition": "COMPLETE"}])
    arn = run(ecs, register(ecs, containers=[named, numeric, plain])["family"])["tasks"][0]["taskArn"]
    done = stopped(ecs, arn)
    assert [c["exitCode"] for c in done["containers"]] == [0, 0, 0], done
    task_id = arn.rsplit("/", 1)[1]
    said = {name: lines(logs, group, f"app/{name}/{task_id}") for name in ("named", "numeric", "plain")}
    assert said == {
        "named": ["id 1000:1000", "root read-only", "nofile 256/512"],
        # The writable layer is the container's: its user owns it.
        "numeric": ["id 2000:50", "root writable", "nofile 1024/1024"],
        "plain": ["id 0:0", "root writable", "nofile 1024/1024"],
    }, said

    # A user the image does not have fails the start; a ulimit ECS does not
    # know, or a soft limit over the hard one, is refused at registration.
    family = register(ecs, containers=[dict(base, name="who", user="nosuch")])["family"]
    failed = stopped(ecs, run(ecs, family)["tasks"][0]["taskArn"])
    assert failed["stopCode"] == "TaskFailedToStart", failed
    assert "unable to find user nosuch: no matching entries in passwd file" in failed["stoppedReason"], failed
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="Member must satisfy enum value set"):
        register(ecs, containers=[dict(base, name="who", ulimits=[{"name": "files", "softLimit": 1,
                                                                    "hardLimit": 1}])])
    with pytest.raises(ecs.exceptions.ClientException, match="must not exceed its hardLimit"):
        register(ecs, containers=[dict(base, name="who", ulimits=[{"name": "nofile", "softLimit": 2,
                                                                    "hardLimit": 1}])])


WRITER = r"""
echo hello >> /work/shared/note
echo "lines $(wc -l < /work/shared/note)"
if (echo x > /written) 2>/dev/null; then echo "root writable"; else echo "root read-only"; fi
"""

READER = r"""
echo "read $(cat /work/shared/note)"
if (echo x > /work/shared/other) 2>/dev/null; then echo "volume writable"; else echo "volume read-only"; fi
echo "scratch $(ls /scratch)"
"""


def test_a_tasks_volumes_are_shared_by_its_containers_and_by_no_other_task(ecs, logs, busybox):
    group = unique_name("/ecs/volumes")
    logs.create_log_group(logGroupName=group)
    # The writer runs as a user of the image, on a read-only root that has no
    # /work: the mount point is made and the root stays read-only.
    writer = {"name": "writer", "image": busybox, "essential": False, "user": "app",
              "readonlyRootFilesystem": True, "entryPoint": ["/bin/sh", "-c", WRITER],
              "mountPoints": [{"sourceVolume": "shared", "containerPath": "/work/shared"}],
              "logConfiguration": awslogs(group)}
    reader = {"name": "reader", "image": busybox, "entryPoint": ["/bin/sh", "-c", READER],
              "dependsOn": [{"containerName": "writer", "condition": "COMPLETE"}],
              "volumesFrom": [{"sourceContainer": "writer", "readOnly": True}],
              "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/scratch"}],
              "logConfiguration": awslogs(group)}
    family = register(ecs, containers=[writer, reader], volumes=[{"name": "shared"}, {"name": "scratch", "host": {}}])
    assert [v["name"] for v in family["volumes"]] == ["shared", "scratch"], family
    for _ in range(2):
        arn = run(ecs, family["family"])["tasks"][0]["taskArn"]
        done = stopped(ecs, arn)
        assert [c["exitCode"] for c in done["containers"]] == [0, 0], done
        task_id = arn.rsplit("/", 1)[1]
        said = {name: lines(logs, group, f"app/{name}/{task_id}") for name in ("writer", "reader")}
        # Each task starts with empty volumes: the note has one line, never two.
        assert said == {"writer": ["lines 1", "root read-only"],
                        "reader": ["read hello", "volume read-only", "scratch "]}, said

    def register_refused(code, words, containers=None, **kw):
        before = ecs.list_task_definitions()["taskDefinitionArns"]
        refused_with(lambda: register(ecs, containers=containers or [dict(writer, essential=True)], **kw), code, *words)
        assert ecs.list_task_definitions()["taskDefinitionArns"] == before

    register_refused("ClientException", ["Unknown volume 'shared'."])
    register_refused("ClientException", ["do not support sourcePath"],
                     volumes=[{"name": "shared", "host": {"sourcePath": "/etc"}}])
    register_refused("ClientException", ["efsVolumeConfiguration is not supported"],
                     volumes=[{"name": "shared", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}])
    register_refused("ClientException", ["Unknown container: 'nobody'"], volumes=[{"name": "scratch"}],
                     containers=[dict(reader, volumesFrom=[{"sourceContainer": "nobody"}], dependsOn=[])])
    # What Fargate refuses is refused, not accepted and ignored.
    register_refused("ClientException", ["do not support ipcMode"], volumes=[{"name": "shared"}], ipcMode="task")
    register_refused("ClientException", ["Links are not supported when networkMode=awsvpc."],
                     volumes=[{"name": "shared"}], containers=[dict(writer, links=["other"])])
    register_refused("ClientException", ["do not support privileged"],
                     volumes=[{"name": "shared"}], containers=[dict(writer, privileged=True)])


def test_a_mount_path_never_leads_out_of_the_image(node, ecs, busybox, tmp_path):
    # Stage two, host root with every capability, holds a descriptor of the
    # host's /proc/<stage one> while it mounts: resolved by name, these paths
    # led to the host's root and made directories there.
    escapes = [f"/proc/self/fd/{fd}/../{node.proc.pid}/root{tmp_path}/escaped-{fd}/a" for fd in (7, 3, 4, 5, 6, 8, 9)]
    escapes.append(f"/proc/self/root/../../../..{tmp_path}/escaped-root")
    for target in escapes:
        mount = {"sourceVolume": "v", "containerPath": target}
        family = register(ecs, containers=[{"name": "a", "image": busybox, "entryPoint": ["/bin/true"],
                                            "mountPoints": [mount]}], volumes=[{"name": "v"}])
        done = stopped(ecs, run(ecs, family["family"])["tasks"][0]["taskArn"])
        assert list(tmp_path.iterdir()) == [], target
        # Either refused inside the image (a magic link is not followed) or
        # mounted inside it (`..` stops at its root): never on the host.
        if done["stopCode"] == "TaskFailedToStart":
            reason = done["stoppedReason"]
            assert f"mounting a volume at {target}" in reason and "Connection reset" not in reason, reason
        else:
            assert done["containers"][0]["exitCode"] == 0, done


def test_a_missing_log_group_fails_the_start_unless_it_may_be_created(ecs, logs, busybox):
    group = unique_name("/ecs/missing")
    echo = {"name": "echo", "image": busybox, "entryPoint": ["/bin/sh", "-c", "echo hello"],
            "logConfiguration": awslogs(group)}
    family = register(ecs, containers=[echo])["family"]
    failed = stopped(ecs, run(ecs, family)["tasks"][0]["taskArn"])
    assert failed["stopCode"] == "TaskFailedToStart"
    assert failed["stoppedReason"].startswith("ResourceInitializationError: failed to validate logger args"), failed
    assert "The specified log group does not exist" in failed["stoppedReason"]
    echo["logConfiguration"] = awslogs(group, create="true")
    family = register(ecs, containers=[echo])["family"]
    arn = run(ecs, family)["tasks"][0]["taskArn"]
    assert stopped(ecs, arn)["stopCode"] == "EssentialContainerExited"
    stream = f"app/echo/{arn.rsplit('/', 1)[1]}"
    assert wait_for(lambda: lines(logs, group, stream), "the line") == ["hello"]


def usage_rows(node):
    db = sqlite3.connect(f"file:{node.data_dir / 'metadata.db'}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        return {r["task_arn"]: dict(r) for r in db.execute("SELECT * FROM ecs_task_usage")}
    finally:
        db.close()


def test_metering_rows_add_up(node, ecs, busybox):
    sleeper = {"name": "s", "image": busybox, "entryPoint": ["/bin/sh", "-c", "sleep 1"]}
    family = register(ecs, containers=[sleeper], cpu="1 vCPU", memory="3GB")["family"]
    arns = [t["taskArn"] for t in run(ecs, family, count=2)["tasks"]]
    tasks = [stopped(ecs, a) for a in arns]
    rows = wait_for(lambda: (lambda r: r if all(a in r for a in arns) else None)(usage_rows(node)), "usage rows")
    for t in tasks:
        row = rows[t["taskArn"]]
        start, stop = t["pullStartedAt"].timestamp(), t["stoppedAt"].timestamp()
        assert abs(row["started_ms"] - start * 1000) <= 1 and abs(row["stopped_ms"] - stop * 1000) <= 1
        assert 1 <= stop - start < 60
        assert row["billed_seconds"] == max(60, math.ceil((row["stopped_ms"] - row["started_ms"]) / 1000)) == 60
        assert (row["cpu_units"], row["memory_mib"]) == (1024, 3072)
        assert row["vcpu_seconds"] == 1.0 * row["billed_seconds"]
        assert row["gb_seconds"] == 3.0 * row["billed_seconds"]
        assert row["family"] == family
    assert sum(rows[a]["gb_seconds"] for a in arns) == 2 * 3.0 * 60
    # `nimbus usage` prices them as Fargate does, per family and day.
    report = json.loads(nimbus_cli(node, "usage", "--json").stdout)
    mine = [t for t in report["tasks"] if t["family"] == family]
    assert [(t["tasks"], t["billedSeconds"], t["vcpuSeconds"], t["gbSeconds"]) for t in mine] == [(2, 120, 120.0, 360.0)]
    fargate = report["prices"]["fargate"]
    assert mine[0]["cost"] == pytest.approx(120 / 3600 * fargate["perVcpuHour"] + 360 / 3600 * fargate["perGbHour"])
    assert "TASK FAMILY" in nimbus_cli(node, "usage").stdout


def test_nimbus_task_list_logs_and_stop(node, ecs, logs, busybox):
    group = unique_name("/ecs/web")
    web = {"name": "web", "image": busybox, "portMappings": [{"containerPort": 8080}], "stopTimeout": 2,
           "logConfiguration": awslogs(group, prefix="site", create="true"),
           "entryPoint": ["/bin/sh", "-c", "echo serving; mkdir -p /tmp/w && echo hi > /tmp/w/index.html"
                          " && exec /bin/busybox httpd -f -p 8080 -h /tmp/w"]}
    family = register(ecs, containers=[web])["family"]
    arn = run(ecs, family)["tasks"][0]["taskArn"]
    task_id = arn.rsplit("/", 1)[1]
    up = running(ecs, arn)
    binding = up["containers"][0]["networkBindings"][0]
    listed = nimbus_cli(node, "task", "list").stdout
    row = next(l for l in listed.splitlines() if l.startswith(task_id))
    assert "RUNNING" in row and f"web:8080->127.0.0.1:{binding['hostPort']}" in row, listed
    assert f" {private_address(up)} " in row, listed
    assert wait_for(lambda: nimbus_cli(node, "task", "logs", task_id).stdout == "serving\n", "nimbus task logs")
    assert nimbus_cli(node, "task", "stop", task_id, "--reason", "cli").stdout == f"stopping {arn}\n"
    done = stopped(ecs, arn)
    assert (done["stopCode"], done["stoppedReason"]) == ("UserInitiated", "cli")
    assert task_id not in nimbus_cli(node, "task", "list").stdout
    assert task_id in nimbus_cli(node, "task", "list", "--all").stdout


def test_stopped_tasks_are_deleted_an_hour_after_they_stop(tmp_path):
    # One real second is an hour of the node's clock.
    clock = ["--test-clock-scale", "3600", "--test-clock-epoch-ms", str(int(time.time() * 1000))]
    node = Server(tmp_path / "data", args=CAPACITY + clock).start()
    try:
        ecs = aws_client(node, "ecs")
        family = register(ecs)["family"]
        arn = run(ecs, family)["tasks"][0]["taskArn"]

        # It fails to start (its image is missing), stops, and an hour of
        # the clock later is gone.
        def gone():
            got = ecs.describe_tasks(tasks=[arn])
            return got["failures"] == [{"arn": arn, "reason": "MISSING"}] and got["tasks"] == []
        wait_for(gone, "the stopped task to be deleted", timeout=10)
        assert ecs.list_tasks(desiredStatus="STOPPED")["taskArns"] == []
        # Its bill stays.
        assert usage_rows(node)[arn]["billed_seconds"] == 60
        node.kill()
        node.start()
        assert aws_client(node, "ecs").describe_tasks(tasks=[arn])["tasks"] == []
    finally:
        node.stop()


# Task A serves its page on 8080, published, and on 8081, not published.
SERVER = ["/bin/sh", "-c", "mkdir -p /tmp/www && echo hello-from-a > /tmp/www/index.html"
          " && (/bin/busybox httpd -f -p 8081 -h /tmp/www &) && exec /bin/busybox httpd -f -p 8080 -h /tmp/www"]
# Task B serves a page of its own on A's container port (so that its own
# namespace has that port), fetches A's page at A's private address, tries
# A's unpublished port and A's host port at the addresses it could guess
# (printing how each failed; a fetch retried while a server starts prints
# nothing of its failed tries), then keeps fetching until A is gone and its
# address refuses connections (while A stops, they are accepted and reset).
# Debian's busybox wget crashes with -T.
GUESSES = ["$A_ADDR:8081", "127.0.0.1:8081", "169.254.170.2:8081", "127.0.0.1:$A_PORT"]
CLIENT = r"""
mkdir -p /tmp/b && echo hello-from-b > /tmp/b/index.html && (/bin/busybox httpd -f -p 8080 -h /tmp/b &)
fetch() {
  i=0
  while [ $i -lt 50 ]; do got=$(wget -q -O - http://$1/index.html 2>/dev/null) && break; sleep 0.1; i=$((i+1)); done
  echo "$got"
}
echo "private $(fetch $A_ADDR:8080)"
echo "own $(fetch 127.0.0.1:8080)"
for addr in %s; do echo "$addr $(wget -q -O /dev/null http://$addr/index.html 2>&1)"; done
echo "waiting"
while wget -q -O /dev/null http://$A_ADDR:8080/index.html; do sleep 0.05; done
while :; do
  out=$(wget -q -O /dev/null http://$A_ADDR:8080/index.html 2>&1)
  case "$out" in *refused*) break;; esac
  sleep 0.05
done
echo "after $out"
""" % " ".join(GUESSES)


def private_address(task):
    """The task's address, as its attachment and each container report it."""
    (eni,) = task["attachments"]
    details = {d["name"]: d["value"] for d in eni["details"]}
    address = details["privateIPv4Address"]
    for c in task["containers"]:
        assert c["networkInterfaces"] == [{"attachmentId": eni["id"], "privateIpv4Address": address}], c
    assert details["macAddress"] == "02:00:" + ":".join(f"{int(o):02x}" for o in address.split("."))
    return address


def test_tasks_reach_each_others_published_ports_and_only_those(ecs, logs, busybox):
    server = {"name": "a", "image": busybox, "entryPoint": SERVER, "stopTimeout": 1,
              "portMappings": [{"containerPort": 8080}]}
    a = run(ecs, register(ecs, containers=[server])["family"])["tasks"][0]["taskArn"]
    up = running(ecs, a)
    (binding,) = up["containers"][0]["networkBindings"]
    a_address = private_address(up)
    assert a_address.startswith("172.31."), a_address
    group = unique_name("/ecs/mesh")
    logs.create_log_group(logGroupName=group)
    client = {"name": "b", "image": busybox, "entryPoint": ["/bin/sh", "-c", CLIENT],
              "environment": [{"name": "A_PORT", "value": str(binding["hostPort"])},
                              {"name": "A_ADDR", "value": a_address}],
              "logConfiguration": awslogs(group)}
    b = run(ecs, register(ecs, containers=[client])["family"])["tasks"][0]["taskArn"]
    assert private_address(running(ecs, b)) not in {a_address, None}
    stream = f"app/b/{b.rsplit('/', 1)[1]}"
    got = wait_for(lambda: (lambda ls: ls if "waiting" in ls else None)(lines(logs, group, stream)), "b's checks")
    guesses = [g.replace("$A_ADDR", a_address).replace("$A_PORT", str(binding["hostPort"])) for g in GUESSES]
    refused = [f"{g} wget: can't connect to remote host ({g.split(':')[0]}): Connection refused" for g in guesses]
    assert got == ["private hello-from-a", "own hello-from-b", *refused, "waiting"], got
    ecs.stop_task(task=a)
    stopped(ecs, a)
    assert stopped(ecs, b)["containers"][0]["exitCode"] == 0
    after = wait_for(lambda: [l for l in lines(logs, group, stream) if l.startswith("after")], "b's last fetch")
    assert after == [f"after wget: can't connect to remote host ({a_address}): Connection refused"], after


def test_a_port_served_on_the_tasks_loopback_alone_is_not_published(ecs, busybox):
    """On Fargate a port mapping reaches the task's network interface: what
    a container serves on its loopback alone (a database trusting local
    connections) stays the task's own. The node's binding, as the task
    network's listeners, dials the task's address, not its loopback."""
    serve = ("mkdir -p /tmp/www && echo hello > /tmp/www/index.html"
             " && (/bin/busybox httpd -f -p 127.0.0.1:8080 -h /tmp/www &) && exec /bin/busybox httpd -f -p 8081 -h /tmp/www")
    c = {"name": "a", "image": busybox, "entryPoint": ["/bin/sh", "-c", serve], "stopTimeout": 1,
         "portMappings": [{"containerPort": 8080}, {"containerPort": 8081}]}
    arn = run(ecs, register(ecs, containers=[c])["family"])["tasks"][0]["taskArn"]
    ports = {b["containerPort"]: b["hostPort"] for b in running(ecs, arn)["containers"][0]["networkBindings"]}

    def fetch(port):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as r:
                return r.read().decode()
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
            return type(e).__name__

    # The loopback server starts first; once the other answers, both are up.
    assert wait_for(lambda: fetch(ports[8081]) == "hello\n", "the task's page on its interface")
    assert fetch(ports[8080]) != "hello\n"
    ecs.stop_task(cluster="default", task=arn)
    stopped(ecs, arn)


def test_a_graceful_stop_of_the_node_stops_tasks_as_stop_task_does(tmp_path, busybox_layout):
    """A node stopped with SIGTERM gives its tasks' containers SIGTERM and
    their stopTimeout, as StopTask does (they were killed with the node),
    and reports them stopped when they stopped, not at the next start."""
    node = Server(tmp_path / "data", args=CAPACITY).start()
    try:
        ecs, logs = aws_client(node, "ecs"), aws_client(node, "logs")
        group = unique_name("/ecs/stopping")
        logs.create_log_group(logGroupName=group)
        trap = "trap 'echo cleaning up; exit 0' TERM; echo started; while :; do sleep 1 & wait $!; done"
        c = {"name": "app", "image": push(node, busybox_layout, "v1"), "entryPoint": ["/bin/sh", "-c", trap],
             "stopTimeout": 20, "logConfiguration": awslogs(group)}
        arn = run(ecs, register(ecs, containers=[c])["family"])["tasks"][0]["taskArn"]
        running(ecs, arn)
        stream = f"app/app/{arn.rsplit('/', 1)[1]}"
        wait_for(lambda: lines(logs, group, stream) == ["started"], "the container to start")
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=30) == 0, node.output()[-3000:]
        stopped_by = time.time()
        node.start()
        ecs, logs = aws_client(node, "ecs"), aws_client(node, "logs")
        assert lines(logs, group, stream) == ["started", "cleaning up"]
        t = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        assert (t["lastStatus"], t["stopCode"], t["containers"][0].get("exitCode")) == ("STOPPED", "TerminationNotice", 0), t
        assert "node stopped" in t["stoppedReason"], t
        assert t["stoppedAt"].timestamp() <= stopped_by, t
    finally:
        node.stop()


def test_a_port_range_publishes_each_of_its_ports(ecs, busybox):
    """`containerPortRange` is Fargate's too: each port of the range is
    published, and reported as a binding of its own (the node's host ports
    are its own, not the range's). What Nimbus cannot relay (UDP) is
    refused, not published as TCP."""
    serve = "mkdir -p /tmp/www && echo ranged > /tmp/www/index.html && exec /bin/busybox httpd -f -p 8081 -h /tmp/www"
    c = {"name": "a", "image": busybox, "entryPoint": ["/bin/sh", "-c", serve], "stopTimeout": 1,
         "portMappings": [{"containerPortRange": "8080-8082"}]}
    definition = register(ecs, containers=[c])
    assert definition["containerDefinitions"][0]["portMappings"] == [{"containerPortRange": "8080-8082"}]
    arn = run(ecs, definition["family"])["tasks"][0]["taskArn"]
    bindings = running(ecs, arn)["containers"][0]["networkBindings"]
    ports = {b["containerPort"]: b["hostPort"] for b in bindings}
    assert sorted(ports) == [8080, 8081, 8082], bindings

    def fetch():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[8081]}/index.html", timeout=10) as r:
                return r.read().decode()
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
            return type(e).__name__

    assert wait_for(lambda: fetch() == "ranged\n", "the page on a port of the range")
    ecs.stop_task(cluster="default", task=arn)
    stopped(ecs, arn)
    udp = {"name": "dns", "image": busybox, "portMappings": [{"containerPort": 53, "protocol": "udp"}]}
    refused_with(lambda: register(ecs, containers=[udp]), "ClientException", "container 'dns'", "TCP ports only")
    both = {"name": "b", "image": busybox, "portMappings": [{"containerPortRange": "80-81"}, {"containerPort": 81}]}
    refused_with(lambda: register(ecs, containers=[both]), "ClientException", "Port 81 (tcp) is mapped more than once")


# What an SDK in a container needs of the suite's own botocore (pure
# Python, for the image's Python version): its packages, with only the
# service models the task calls.
SITE = Path(boto3.__file__).parents[1]
SDK_PACKAGES = ["botocore", "dateutil", "jmespath", "urllib3"]
SDK_MODELS = {"ecs", "lambda", "logs"}


def other_models(directory, names):
    if Path(directory) != SITE / "botocore" / "data":
        return []
    return [n for n in names if (Path(directory) / n).is_dir() and n not in SDK_MODELS]


def link_blobs(src, dst):
    """Blobs are immutable: linked. The index, which gets a new tag, is copied."""
    return os.link(src, dst) if "/blobs/" in src else shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def python_sdk(node, python_layout, tmp_path_factory):
    """The Python image of the image-function tests with one more layer,
    botocore from the suite's venv (byte-compiled: the root is read-only
    where it runs); its URI on the node."""
    work = tmp_path_factory.mktemp("python-sdk")
    layout = work / "layout"
    shutil.copytree(python_layout, layout, copy_function=link_blobs)
    site = work / "usr/local/lib/python3/dist-packages"
    for name in SDK_PACKAGES:
        shutil.copytree(SITE / name, site / name, ignore=other_models)
    shutil.copy2(SITE / "six.py", site / "six.py")
    sh(sys.executable, "-m", "compileall", "-q", site)

    def as_root(info):
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info
    with tarfile.open(work / "sdk.tar", "w") as tar:
        tar.add(work / "usr", arcname="usr", filter=as_root)
    sh("umoci", "raw", "add-layer", "--image", f"{layout}:v1", "--tag", "sdk", work / "sdk.tar")
    return push(node, layout, "sdk")


# Calls Nimbus through botocore's default chain: credentials from the
# container endpoint, the endpoint from AWS_ENDPOINT_URL, the region from
# AWS_REGION; nothing of them is in the task definition.
SDK_CALLS = r"""
import json, os, urllib.request
import botocore.session
from botocore.exceptions import ClientError
me = json.load(urllib.request.urlopen(os.environ["ECS_CONTAINER_METADATA_URI_V4"] + "/task"))
session = botocore.session.get_session()
logs = session.create_client("logs")
streams = logs.describe_log_streams(logGroupName=os.environ["GROUP"])["logStreams"]

def refused(call):
    try:
        call()
    except ClientError as e:
        return [e.response["Error"]["Code"], e.response["Error"]["Message"]]

ecs = session.create_client("ecs")
print(json.dumps({"credentials": session.get_credentials().method, "endpoint": logs.meta.endpoint_url,
                  "region": logs.meta.region_name, "task": me["TaskARN"],
                  "streams": [s["logStreamName"] for s in streams],
                  "ecs": refused(lambda: ecs.describe_tasks(cluster=me["Cluster"], tasks=[me["TaskARN"]])),
                  "lambda": refused(lambda: session.create_client("lambda").get_function(FunctionName=os.environ["FN"]))}))
"""


def test_an_aws_sdk_in_the_container_calls_nimbus_as_the_task(node, ecs, logs, python_sdk):
    lam = aws_client(node, "lambda")
    fn = unique_name("seen-from-task")
    create(lam, fn)
    group = unique_name("/ecs/sdk")
    logs.create_log_group(logGroupName=group)
    sdk = {"name": "sdk", "image": python_sdk, "entryPoint": ["python3", "-c", SDK_CALLS],
           "logConfiguration": awslogs(group),
           "environment": [{"name": "GROUP", "value": group}, {"name": "FN", "value": fn}]}
    arn = run(ecs, register(ecs, containers=[sdk], taskRoleArn=ROLE)["family"])["tasks"][0]["taskArn"]
    done = stopped(ecs, arn)
    stream = f"app/sdk/{arn.rsplit('/', 1)[1]}"
    got = lines(logs, group, stream)
    assert done["containers"][0]["exitCode"] == 0, (done, got)
    out = json.loads(got[-1])
    assert out["credentials"] == "container-role" and out["endpoint"] == "http://169.254.170.2:51678", out
    assert (out["region"], out["task"], out["streams"]) == (REGION, arn, [stream]), out
    # The task's credentials are for data, not for managing compute: they
    # read neither ECS's tasks nor another function's configuration.
    assert out["ecs"] == ["AccessDeniedException", f"User: {arn} is not authorized to perform: ecs:DescribeTasks "
                          "on resource: * because no identity-based policy allows the ecs:DescribeTasks action"]
    assert out["lambda"] == ["AccessDeniedException", f"User: {arn} is not authorized to perform: lambda:GetFunction "
                             f"on resource: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fn} because no "
                             "identity-based policy allows the lambda:GetFunction action"], out


# Opens 150 connections to each endpoint of the task and holds them (past
# what the node takes, they wait in a backlog of 128).
HOLD = r"""
import socket, sys, time
held = [socket.create_connection(("169.254.170.2", port), timeout=30) for port in (51678, 51679) for _ in range(150)]
print("held", len(held), flush=True)
time.sleep(120)
"""


def test_a_task_holds_at_most_its_share_of_the_nodes_descriptors(node, ecs, logs, python_sdk):
    """Each connection to a task's endpoints costs the node a descriptor
    (two when forwarded to the API): a container opening hundreds took them
    without bound (450 for these 300). Past 64 per endpoint, they wait in
    the backlog."""
    group = unique_name("/ecs/hold")
    logs.create_log_group(logGroupName=group)
    hold = {"name": "hold", "image": python_sdk, "entryPoint": ["python3", "-c", HOLD], "logConfiguration": awslogs(group),
            "stopTimeout": 2}
    fds = lambda: len(os.listdir(f"/proc/{node.proc.pid}/fd"))  # noqa: E731
    before = fds()
    arn = run(ecs, register(ecs, containers=[hold])["family"])["tasks"][0]["taskArn"]
    stream = f"app/hold/{arn.rsplit('/', 1)[1]}"
    try:
        wait_for(lambda: "held 300" in lines(logs, group, stream), "the container to hold its connections")
        grown = fds() - before
        assert grown < 300, f"the node took {grown} descriptors for 300 held connections"
    finally:
        ecs.stop_task(task=arn)
        stopped(ecs, arn)


def processes_named(comm):
    """Host pids of processes whose command name is `comm`, zombies too."""
    return host_pids(lambda pid: Path(f"/proc/{pid}/comm").read_text().strip() == comm)


def test_a_container_killed_at_its_stop_timeout_leaves_no_zombie(ecs, busybox):
    # One that ignores SIGTERM is killed when its stop timeout ends: its
    # processes before the stage one that waits on its PID 1, which reaps
    # it. Killed first, that stage one left PID 1 a zombie for the host's
    # init (the node itself when it is a container's PID 1, which never
    # reaps it). Its processes run a copy of busybox under a name of their
    # own (busybox takes its first argument for the applet under a name
    # that starts with its own), so the host's table tells them apart.
    comm = f"busybox{time.time_ns() % 10**8:08d}"
    stubborn = {"name": "stubborn", "image": busybox, "stopTimeout": 1,
                "entryPoint": ["/bin/sh", "-c", f"/bin/busybox cp /bin/busybox /tmp/{comm} && exec /tmp/{comm} sh -c"
                               f" \"trap '' TERM; while :; do /tmp/{comm} sleep 1; done\""]}
    family = register(ecs, containers=[stubborn])["family"]
    arn = run(ecs, family)["tasks"][0]["taskArn"]
    running(ecs, arn)
    wait_for(lambda: processes_named(comm), "the container's processes")
    ecs.stop_task(task=arn, reason="test over")
    done = stopped(ecs, arn)
    assert done["containers"][0]["exitCode"] == 137, done["containers"]
    assert processes_named(comm) == []


def test_output_without_a_log_driver_is_kept_up_to_a_bound(node, ecs, busybox):
    """A container without a log driver writes to `output.log` on the node's
    disk (Fargate keeps none of it): its first 64 MiB, then a line saying the
    rest is not kept."""
    flood = {"name": "flood", "image": busybox, "stopTimeout": 2,
             "entryPoint": ["/bin/sh", "-c", "yes nimbus | head -c 100000000; exec sleep 600"]}
    arn = run(ecs, register(ecs, containers=[flood])["family"])["tasks"][0]["taskArn"]
    running(ecs, arn)
    log = node.data_dir / "worker" / "tasks" / arn.rsplit("/", 1)[1] / "flood" / "output.log"
    marker = b"[Nimbus] output past 64 MiB is not kept\n"
    wait_for(lambda: log.exists() and log.stat().st_size >= 64 << 20 and log.read_bytes().endswith(marker),
             "output.log to reach its bound")
    assert log.stat().st_size == (64 << 20) + 1 + len(marker)
    ecs.stop_task(cluster="default", task=arn)
    stopped(ecs, arn)
