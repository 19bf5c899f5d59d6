"""ECS services through boto3's `ecs` client, the aws CLI (`wait
services-stable`) and `nimbus service list`: a service of 3 that survives a
killed task and rolls to a new revision with every old task serving until a
new one is healthy (checked on the tasks' ports during the roll), a
container health check that fails and has its task replaced, a health
check that sees its container's files, environment and user, dependsOn, the deployment
circuit breaker rolling back a revision that exits at once, kill -9 of the
server and the reconcile after it, and bad input. The image is test_ecs's
busybox image (nothing is downloaded)."""

import http.client
import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, Server, aws_client, aws_json, error_code, nimbus_cli, unique_name, wait_for
from test_ecs import NETWORK, busybox, busybox_layout, container, refused, register, run, stopped  # noqa: F401
from test_image_functions import push

# Room for two services of 3 rolling at 200% at once.
CAPACITY = ["--task-cpu-units", "4096", "--task-memory-mib", "8192"]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("ecs-services") / "data", args=CAPACITY).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def ecs(node):
    return aws_client(node, "ecs")



def serving(text):
    """A web server answering `text`, as PID 1."""
    return ["/bin/sh", "-c", f"/bin/busybox mkdir -p /tmp/www && echo {text} > /tmp/www/index.html"
            " && exec /bin/busybox httpd -f -p 8080 -h /tmp/www"]


# A probe over the task's loopback, every second. A pass counts at once; a
# failure, enough on its own, only after 5 s, so that a loaded machine's
# slow httpd start is not a failed check.
PAGE_CHECK = {"command": ["CMD-SHELL", "/bin/busybox wget -q -O /dev/null http://127.0.0.1:8080/index.html"],
              "interval": 1, "timeout": 5, "retries": 1, "startPeriod": 5}


def web(busybox, text, **kw):
    return container(image=busybox, entryPoint=serving(text), stopTimeout=1, **kw)


def create(ecs, family, count, **kw):
    name = unique_name("svc")
    params = dict(serviceName=name, taskDefinition=family, desiredCount=count, launchType="FARGATE",
                  networkConfiguration=NETWORK)
    params.update(kw)
    service = ecs.create_service(**params)["service"]
    assert service["serviceArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/default/{name}"
    return name


def describe(ecs, name, cluster="default"):
    return ecs.describe_services(cluster=cluster, services=[name])["services"][0]


def stable(ecs, name, cluster="default", timeout=30):
    """The service once it is stable as the services-stable waiter defines it."""
    def check():
        s = describe(ecs, name, cluster)
        return s if len(s["deployments"]) == 1 and s["runningCount"] == s["desiredCount"] else None
    return wait_for(check, f"{name} to be stable", timeout=timeout)


def service_tasks(ecs, name, cluster="default"):
    arns = ecs.list_tasks(cluster=cluster, serviceName=name)["taskArns"]
    return ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []


def messages(service):
    return [e["message"] for e in service["events"]]


def port_of(task):
    return task["containers"][0]["networkBindings"][0]["hostPort"]


def answer(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
            return r.read().decode().strip()
    except (OSError, http.client.HTTPException):  # refused, or cut off by a task stopping mid-answer
        return None


def kill_task_processes(task):
    """SIGKILL to every process of the task, found through its cgroup."""
    task_id = task["taskArn"].rsplit("/", 1)[1]
    found = [Path(d) for d, _, _ in os.walk("/sys/fs/cgroup") if d.endswith(f"/task-{task_id}")]
    assert found, f"no cgroup for task {task_id}"
    pids = [int(p) for p in (found[0] / "cgroup.procs").read_text().split()]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def finish(ecs, name, cluster="default"):
    gone = ecs.delete_service(cluster=cluster, service=name, force=True)["service"]
    assert gone["status"] == "DRAINING"
    wait_for(lambda: describe(ecs, name, cluster)["status"] == "INACTIVE", f"{name} to drain")


def test_a_service_of_three_survives_a_killed_task_and_rolls_with_minimum_healthy_serving(node, ecs, busybox):
    family = unique_name("svc")
    one = register(ecs, family, containers=[web(busybox, "v1", healthCheck=PAGE_CHECK)])["taskDefinitionArn"]
    two = register(ecs, family, containers=[web(busybox, "v2", healthCheck=PAGE_CHECK)])["taskDefinitionArn"]
    name = create(ecs, f"{family}:1", 3,
                  deploymentConfiguration={"maximumPercent": 200, "minimumHealthyPercent": 100})
    service = stable(ecs, name)
    code, _, err = aws_json(node, "ecs", "wait", "services-stable", "--services", name)
    assert code == 0, err
    (deployment,) = service["deployments"]
    assert (deployment["status"], deployment["rolloutState"], deployment["taskDefinition"]) == (
        "PRIMARY", "COMPLETED", one)
    assert deployment["id"].startswith("ecs-svc/") and len(deployment["id"]) == len("ecs-svc/") + 19
    assert service["deploymentConfiguration"]["maximumPercent"] == 200
    assert service["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": False, "rollback": False}
    said = messages(service)
    assert any(m.startswith(f"(service {name}) has started 3 tasks: (task ") for m in said), said
    assert f"(service {name}) has reached a steady state." in said
    assert f"(service {name}) (deployment {deployment['id']}) deployment completed." in said
    tasks = service_tasks(ecs, name)
    assert len(tasks) == 3
    for t in tasks:
        assert (t["startedBy"], t["group"]) == (deployment["id"], f"service:{name}")
        assert wait_for(lambda: answer(port_of(t)), "a task's page") == "v1"

    # A task whose processes are killed is replaced.
    victim = tasks[0]
    kill_task_processes(victim)
    assert stopped(ecs, victim["taskArn"])["stopCode"] == "EssentialContainerExited"

    def replaced():
        now = service_tasks(ecs, name)
        arns = {t["taskArn"] for t in now if t["lastStatus"] == "RUNNING"}
        return len(arns) == 3 and victim["taskArn"] not in arns
    wait_for(replaced, "the killed task's replacement")
    assert len(stable(ecs, name)["deployments"]) == 1

    # The roll to revision 2: at every moment, at least 3 tasks answer
    # (minimumHealthyPercent 100 of 3). Ports are fetched oldest task first,
    # so that a new task answering late cannot hide an old one's stop.
    ecs.update_service(service=name, taskDefinition=f"{family}:2")
    known = {}  # port -> createdAt
    seen_two_deployments = False
    deadline = time.monotonic() + 60
    while True:
        s = describe(ecs, name)
        seen_two_deployments |= len(s["deployments"]) == 2
        for t in service_tasks(ecs, name):
            if t["lastStatus"] == "RUNNING" and t["containers"][0]["networkBindings"]:
                known.setdefault(port_of(t), t["createdAt"])
        answers = [answer(p) for p in sorted(known, key=known.get)]
        serving_now = [a for a in answers if a]
        assert len(serving_now) >= 3, (answers, s["deployments"])
        if len(s["deployments"]) == 1 and s["deployments"][0]["rolloutState"] == "COMPLETED" \
                and s["runningCount"] == 3 and serving_now == ["v2"] * 3:
            break
        assert time.monotonic() < deadline, s
    assert seen_two_deployments
    code, out, err = aws_json(node, "ecs", "wait", "services-stable", "--services", name)
    assert code == 0, err
    s = describe(ecs, name)
    assert s["taskDefinition"] == two and s["deployments"][0]["taskDefinition"] == two
    assert any(re.match(rf"\(service {name}\) has stopped [1-3] running tasks: \(task ", m) for m in messages(s))
    old = ecs.list_tasks(serviceName=name, desiredStatus="STOPPED")["taskArns"]
    stops = ecs.describe_tasks(tasks=old)["tasks"]
    assert sum(t["stopCode"] == "ServiceSchedulerInitiated" for t in stops) == 3

    # `nimbus service list` shows it.
    out = nimbus_cli(node, "service", "list").stdout
    row = next(line.split() for line in out.splitlines() if line.startswith(name + " "))
    assert row[1:6] == ["ACTIVE", "3", "3", "0", f"{family}:2"], out
    finish(ecs, name)
    assert all(t["lastStatus"] == "STOPPED" for t in ecs.describe_tasks(tasks=[t["taskArn"] for t in tasks])["tasks"])


def test_a_failing_health_check_replaces_the_task(ecs, busybox):
    # The page is there until 2 s after the probe first passed (the probe
    # leaves a mark), then gone: the probe passes, then fails. Timed from
    # the pass, not from the start: on a loaded machine the first probe
    # can come later than any fixed delay.
    flaky = ["/bin/sh", "-c", "/bin/busybox mkdir -p /tmp/www && echo ok > /tmp/www/index.html"
             " && (until [ -f /tmp/passed ]; do /bin/busybox sleep 0.1; done; /bin/busybox sleep 2;"
             " rm /tmp/www/index.html) & exec /bin/busybox httpd -f -p 8080 -h /tmp/www"]
    check = dict(PAGE_CHECK, command=[PAGE_CHECK["command"][0], PAGE_CHECK["command"][1] + " && touch /tmp/passed"])
    family = register(ecs, containers=[container(image=busybox, entryPoint=flaky, stopTimeout=1,
                                                 healthCheck=check)])["family"]
    name = create(ecs, family, 1)
    first = wait_for(lambda: [t for t in service_tasks(ecs, name) if t["healthStatus"] == "HEALTHY"],
                     "a healthy task", 60)[0]
    assert first["containers"][0]["healthStatus"] == "HEALTHY"
    done = stopped(ecs, first["taskArn"])
    assert (done["stopCode"], done["stoppedReason"]) == ("ServiceSchedulerInitiated",
                                                          "Task failed container health checks")
    assert done["healthStatus"] == "UNHEALTHY" and done["containers"][0]["healthStatus"] == "UNHEALTHY"
    wait_for(lambda: [t for t in service_tasks(ecs, name) if t["taskArn"] != first["taskArn"]], "a replacement")
    task_id = first["taskArn"].rsplit("/", 1)[1]
    assert f"(service {name}) (task {task_id}) failed container health checks." in messages(describe(ecs, name))
    finish(ecs, name)


def test_a_service_on_a_deregistered_revision_still_scales(ecs, busybox):
    # As on AWS: an INACTIVE task definition starts no new task or service,
    # but a service already on it scales and replaces its tasks.
    family = register(ecs, containers=[web(busybox, "kept")])["family"]
    name = create(ecs, f"{family}:1", 1, propagateTags="SERVICE", enableECSManagedTags=True,
                  tags=[{"key": "team", "value": "blue"}])
    stable(ecs, name)
    # Its tasks carry the service's tags, as propagateTags=SERVICE says.
    (task,) = service_tasks(ecs, name)
    assert ecs.list_tags_for_resource(resourceArn=task["taskArn"])["tags"] == [{"key": "team", "value": "blue"}]
    assert (describe(ecs, name)["propagateTags"], describe(ecs, name)["enableECSManagedTags"]) == ("SERVICE", True)
    with pytest.raises(ClientError) as e:
        create(ecs, family, 1, serviceRegistries=[{"registryArn": "arn:aws:servicediscovery:us-east-1:1:service/x"}])
    assert error_code(e) == "InvalidParameterException"
    ecs.deregister_task_definition(taskDefinition=f"{family}:1")
    with pytest.raises(ClientError) as e:
        ecs.run_task(taskDefinition=f"{family}:1", launchType="FARGATE", networkConfiguration=NETWORK)
    assert error_code(e) == "InvalidParameterException"
    ecs.update_service(service=name, desiredCount=2)
    assert stable(ecs, name)["runningCount"] == 2
    for bad in ({"tasks": []}, {"services": []}):
        with pytest.raises(ClientError) as e:
            (ecs.describe_tasks if "tasks" in bad else ecs.describe_services)(**bad)
        assert e.value.response["Error"]["Message"] == f"{next(iter(bad)).capitalize()} cannot be empty."
    finish(ecs, name)


def test_a_health_check_runs_inside_its_container(ecs, busybox):
    # The container makes its file after a while; the check runs where the
    # container does: its /tmp, its environment, its user and directory.
    late = ["/bin/sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 60"]
    check = {"command": ["CMD-SHELL", 'test -f /tmp/ready && test "$MARK" = set && test "$(id -u)" = 1000'
                         ' && test "$(pwd)" = /app'], "interval": 1, "timeout": 2, "retries": 1, "startPeriod": 10}
    family = register(ecs, containers=[container(image=busybox, entryPoint=late, stopTimeout=1, healthCheck=check,
                                                 user="app", environment=[{"name": "MARK", "value": "set"}])])["family"]
    arn = run(ecs, family)["tasks"][0]["taskArn"]

    def health():
        t = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        assert t["lastStatus"] != "STOPPED", t
        return t["lastStatus"] == "RUNNING" and t["containers"][0]["healthStatus"]
    assert wait_for(health, "the task to run") == "UNKNOWN"
    started = time.monotonic()
    assert wait_for(lambda: health() == "HEALTHY", "the check to pass")
    assert time.monotonic() - started > 1, "healthy before the file was made"
    ecs.stop_task(task=arn)
    stopped(ecs, arn)


def test_the_circuit_breaker_rolls_back_a_revision_that_exits_at_once(node, ecs, busybox):
    family = unique_name("cb")
    good = register(ecs, family, containers=[web(busybox, "good")])["taskDefinitionArn"]
    register(ecs, family, containers=[container(image=busybox, entryPoint=["/bin/sh", "-c", "exit 1"])])
    name = create(ecs, f"{family}:1", 2, deploymentConfiguration={
        "deploymentCircuitBreaker": {"enable": True, "rollback": True}, "maximumPercent": 200,
        "minimumHealthyPercent": 100})
    first = stable(ecs, name)["deployments"][0]["id"]
    ecs.update_service(service=name, taskDefinition=f"{family}:2")
    bad = describe(ecs, name)["deployments"][0]
    assert bad["taskDefinition"].endswith(f"{family}:2") and bad["rolloutState"] == "IN_PROGRESS"
    said = wait_for(lambda: [m for m in messages(describe(ecs, name)) if "rolling back" in m], "the rollback")
    assert said == [f"(service {name}) rolling back to deployment {first}."]
    s = stable(ecs, name)
    assert s["taskDefinition"] == good
    (primary,) = s["deployments"]
    assert (primary["id"], primary["taskDefinition"], primary["rolloutState"]) == (first, good, "COMPLETED")
    assert f"(service {name}) (deployment {bad['id']}) deployment failed: tasks failed to start." in messages(s)
    failed = ecs.list_tasks(desiredStatus="STOPPED", startedBy=bad["id"])["taskArns"]
    assert len(failed) >= 3, "AWS's threshold: at least 3 failed tasks"
    assert {t["taskDefinitionArn"] for t in service_tasks(ecs, name)} == {good}
    finish(ecs, name)


def test_depends_on_orders_container_starts(ecs, busybox):
    # init exits 0 at once; db serves after a second and is HEALTHY once it
    # answers; web copies db's page when it starts, and serves it: it can
    # only do so if it started after both conditions held. db's start period
    # is long so that its checks before httpd listens never count, however
    # slowly a loaded machine gets there (a success ends the start period).
    init = {"name": "init", "image": busybox, "essential": False, "entryPoint": ["/bin/sh", "-c", "exit 0"]}
    db = {"name": "db", "image": busybox, "essential": False, "stopTimeout": 1,
          "portMappings": [{"containerPort": 9000}],
          "entryPoint": ["/bin/sh", "-c", "/bin/busybox mkdir -p /tmp/db && echo from-db > /tmp/db/index.html"
                         " && /bin/busybox sleep 1 && exec /bin/busybox httpd -f -p 9000 -h /tmp/db"],
          "healthCheck": {"command": ["CMD-SHELL", "/bin/busybox wget -q -O /dev/null http://127.0.0.1:9000/"],
                          "interval": 1, "retries": 1, "startPeriod": 120}}
    web = container(image=busybox, stopTimeout=1, entryPoint=[
        "/bin/sh", "-c", "/bin/busybox mkdir -p /tmp/www && /bin/busybox wget -q -O /tmp/www/index.html"
        " http://127.0.0.1:9000/ && exec /bin/busybox httpd -f -p 8080 -h /tmp/www"],
        dependsOn=[{"containerName": "init", "condition": "SUCCESS"}, {"containerName": "db", "condition": "HEALTHY"}])
    family = register(ecs, containers=[init, db, web])["family"]
    arn = ecs.run_task(taskDefinition=family, launchType="FARGATE", networkConfiguration=NETWORK)["tasks"][0]["taskArn"]

    def status(task, name):
        return next(c for c in task["containers"] if c["name"] == name)["lastStatus"]

    waiting = wait_for(lambda: _task_if(ecs, arn, lambda t: t["lastStatus"] == "RUNNING"), "the task to run")
    assert status(waiting, "web") == "PENDING", "web waits for db to be healthy"
    up = wait_for(lambda: _task_if(ecs, arn, lambda t: status(t, "web") == "RUNNING"), "web to start")
    assert next(c for c in up["containers"] if c["name"] == "db")["healthStatus"] == "HEALTHY"
    assert next(c for c in up["containers"] if c["name"] == "init")["exitCode"] == 0
    (binding,) = next(c for c in up["containers"] if c["name"] == "web")["networkBindings"]
    assert wait_for(lambda: answer(binding["hostPort"]), "web's page") == "from-db"
    ecs.stop_task(task=arn)
    stopped(ecs, arn)

    # A SUCCESS condition that fails stops the task.
    failing = dict(init, entryPoint=["/bin/sh", "-c", "exit 3"])
    family = register(ecs, containers=[failing, dict(web, dependsOn=[{"containerName": "init",
                                                                       "condition": "SUCCESS"}])])["family"]
    arn = ecs.run_task(taskDefinition=family, launchType="FARGATE", networkConfiguration=NETWORK)["tasks"][0]["taskArn"]
    done = stopped(ecs, arn)
    assert done["stopCode"] == "TaskFailedToStart", done
    assert done["stoppedReason"] == ("CannotStartContainerError: dependency of container web on init (SUCCESS):"
                                     " it exited with 3")
    refused(lambda: register(ecs, containers=[dict(init, essential=True), web]), "ClientException",
            "must not be essential")


def _task_if(ecs, arn, predicate):
    t = ecs.describe_tasks(tasks=[arn])["tasks"][0]
    assert t["lastStatus"] != "STOPPED", (t.get("stoppedReason"), t["containers"])
    return t if predicate(t) else None


def test_bad_service_input_changes_nothing(ecs):
    family = register(ecs)["family"]
    refused(lambda: ecs.create_service(cluster="no-such-cluster", serviceName="s", taskDefinition=family,
                                       desiredCount=1, networkConfiguration=NETWORK),
            "ClusterNotFoundException", "Cluster not found.")
    refused(lambda: ecs.create_service(serviceName=unique_name("s"), taskDefinition="no-such-family",
                                       desiredCount=1, networkConfiguration=NETWORK),
            "InvalidParameterException", "TaskDefinition not found.")
    refused(lambda: ecs.create_service(serviceName=unique_name("s"), taskDefinition=family, desiredCount=1),
            "InvalidParameterException", "Network Configuration must be provided")
    refused(lambda: ecs.create_service(serviceName=unique_name("s"), taskDefinition=family, desiredCount=1,
                                       networkConfiguration=NETWORK,
                                       deploymentConfiguration={"maximumPercent": 100, "minimumHealthyPercent": 100}),
            "InvalidParameterException", "minimumHealthyPercent")
    refused(lambda: ecs.update_service(service="no-such-service", desiredCount=1), "ServiceNotFoundException")
    assert ecs.describe_services(services=["no-such-service"])["failures"] == [
        {"arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/default/no-such-service", "reason": "MISSING"}]
    # The image is missing: its tasks fail, and are retried with backoff.
    name = create(ecs, family, 1)
    refused(lambda: ecs.create_service(serviceName=name, taskDefinition=family, desiredCount=1,
                                       networkConfiguration=NETWORK),
            "InvalidParameterException", "Creation of service was not idempotent.")
    refused(lambda: ecs.update_service(service=name, taskDefinition="no-such-family"),
            "InvalidParameterException", "TaskDefinition not found.")
    refused(lambda: ecs.delete_service(service=name), "InvalidParameterException",
            "The service cannot be stopped while it is scaled above 0.")
    service_arn = describe(ecs, name)["serviceArn"]
    ecs.tag_resource(resourceArn=service_arn, tags=[{"key": "team", "value": "a"}])
    assert ecs.list_tags_for_resource(resourceArn=service_arn)["tags"] == [{"key": "team", "value": "a"}]
    got = ecs.describe_services(services=[name], include=["TAGS"])["services"][0]
    assert (got["status"], got["tags"]) == ("ACTIVE", [{"key": "team", "value": "a"}])
    finish(ecs, name)
    refused(lambda: ecs.update_service(service=name, desiredCount=2), "ServiceNotActiveException",
            "Service was not ACTIVE.")
    s = describe(ecs, name)
    assert (s["status"], s["desiredCount"]) == ("INACTIVE", 0)
    assert s["serviceArn"] not in ecs.list_services()["serviceArns"]
    assert ecs.list_tasks(serviceName=name)["taskArns"] == []
    failed = ecs.list_tasks(serviceName=name, desiredStatus="STOPPED")["taskArns"]
    reasons = {t["stoppedReason"].split(":")[0] for t in ecs.describe_tasks(tasks=failed)["tasks"]}
    deployment = s["deployments"][0]["id"]
    assert "CannotPullContainerError" in reasons, reasons
    assert reasons <= {"CannotPullContainerError", f"Scaling activity initiated by (deployment {deployment})"}


def test_services_reconcile_after_kill_9(tmp_path, busybox_layout):
    node = Server(tmp_path / "data", args=CAPACITY).start()
    try:
        ecs = aws_client(node, "ecs")
        image = push(node, busybox_layout, "v1")
        family = register(ecs, containers=[web(image, "kept")])["family"]
        ecs.create_cluster(clusterName="kept")
        name = create_in(ecs, "kept", family)
        before = {t["taskArn"] for t in service_tasks(ecs, name, "kept")}
        assert len(before) == 2
        refused(lambda: ecs.delete_cluster(cluster="kept"), "ClusterContainsServicesException")
        assert ecs.describe_clusters(clusters=["kept"])["clusters"][0]["activeServicesCount"] == 1
        node.kill()
        node.start()
        ecs = aws_client(node, "ecs")
        s = stable(ecs, name, "kept")
        assert s["status"] == "ACTIVE" and s["runningCount"] == 2
        after = service_tasks(ecs, name, "kept")
        assert len(after) == 2 and not before & {t["taskArn"] for t in after}
        for t in after:
            assert wait_for(lambda: answer(port_of(t)), "a reconciled task's page") == "kept"
        for t in ecs.describe_tasks(cluster="kept", tasks=list(before))["tasks"]:
            assert (t["lastStatus"], t["stopCode"]) == ("STOPPED", "TerminationNotice")
        finish(ecs, name, "kept")
        assert ecs.delete_cluster(cluster="kept")["cluster"]["status"] == "INACTIVE"
    finally:
        node.stop()


def create_in(ecs, cluster, family):
    name = unique_name("svc")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=2,
                       networkConfiguration=NETWORK)
    stable(ecs, name, cluster)
    return name
