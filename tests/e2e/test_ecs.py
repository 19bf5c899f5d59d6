"""ECS with the Fargate launch type, through boto3's `ecs` client and the aws
CLI (with its waiters): clusters, task definitions and their bad input,
RunTask and the lifecycle of a task whose image cannot be pulled, ListTasks'
default, tags, capacity failures, a restart with kill -9, and tasks that
run: an HTTP server reachable on its port, two containers talking over
localhost, an essential container's exit, StopTask, an entrypoint missing
from the image. The image is the
busybox recipe of examples/container-images (nothing is downloaded)."""

import json
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import (ACCOUNT, REGION, Server, aws_client, aws_json, error_code, send, signed_request, unique_name,
                      wait_for)
from test_image_functions import RECIPES, push, run as sh
from test_registry import Registry, new_repo, push_image

# What the node offers tasks in these tests: 2 vCPU and 6 GiB.
CAPACITY = ["--task-cpu-units", "2048", "--task-memory-mib", "6144"]
NETWORK = {"awsvpcConfiguration": {"subnets": ["subnet-12345"], "assignPublicIp": "DISABLED"}}
MISSING_IMAGE = "127.0.0.1:5000/nimbus-tests/missing:v1"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("ecs") / "data", args=CAPACITY).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def ecs(node):
    return aws_client(node, "ecs")


def arn(resource):
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:{resource}"


def container(name="web", image=MISSING_IMAGE, **kw):
    return {"name": name, "image": image, "portMappings": [{"containerPort": 8080}], **kw}


def register(ecs, family=None, cpu="256", memory="512", containers=None, **kw):
    params = dict(family=family or unique_name("td"), networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
                  cpu=cpu, memory=memory, containerDefinitions=containers or [container()])
    params.update(kw)
    return ecs.register_task_definition(**params)["taskDefinition"]


def run(ecs, family, **kw):
    params = dict(taskDefinition=family, launchType="FARGATE", networkConfiguration=NETWORK)
    params.update(kw)
    return ecs.run_task(**params)


def refused(call, code, *words):
    with pytest.raises(ClientError) as e:
        call()
    assert error_code(e) == code, e.value.response
    message = e.value.response["Error"]["Message"]
    for w in words:
        assert w in message, message
    return message


def stopped(ecs, task_arn, cluster="default"):
    def done():
        t = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
        return t if t["lastStatus"] == "STOPPED" else None
    return wait_for(done, f"{task_arn} to stop")


def test_clusters_and_the_default_cluster(ecs):
    name = unique_name("cl")
    made = ecs.create_cluster(clusterName=name, tags=[{"key": "team", "value": "a"}])["cluster"]
    assert made["clusterArn"] == arn(f"cluster/{name}") and made["status"] == "ACTIVE"
    assert ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"] == made["clusterArn"]
    assert made["clusterArn"] in ecs.list_clusters()["clusterArns"]
    got = ecs.describe_clusters(clusters=[name, "nope"], include=["TAGS"])
    assert [c["clusterName"] for c in got["clusters"]] == [name]
    assert got["clusters"][0]["tags"] == [{"key": "team", "value": "a"}]
    assert got["failures"] == [{"arn": arn("cluster/nope"), "reason": "MISSING"}]
    # `default` exists on first use.
    assert ecs.describe_clusters()["clusters"][0]["clusterName"] == "default"
    assert ecs.delete_cluster(cluster=name)["cluster"]["status"] == "INACTIVE"
    refused(lambda: ecs.delete_cluster(cluster=name), "ClusterNotFoundException", "Cluster not found.")
    refused(lambda: ecs.list_tasks(cluster=name), "ClusterNotFoundException")
    # ListTasks' and DescribeTasks' rules, as AWS's model states them.
    refused(lambda: ecs.list_tasks(startedBy="me", family="f"), "InvalidParameterException", "startedBy")
    refused(lambda: ecs.list_tasks(maxResults=500), "InvalidParameterException")
    refused(lambda: ecs.list_tasks(serviceName="no-such-service"), "ServiceNotFoundException")
    refused(lambda: ecs.describe_tasks(tasks=[f"t{i}" for i in range(101)]), "InvalidParameterException")


def test_task_definitions_revisions_and_normalised_sizes(ecs):
    family = unique_name("td")
    one = register(ecs, family, cpu="1 vCPU", memory="2GB", tags=[{"key": "k", "value": "v"}])
    assert (one["revision"], one["status"], one["cpu"], one["memory"]) == (1, "ACTIVE", "1024", "2048")
    assert one["taskDefinitionArn"] == arn(f"task-definition/{family}:1")
    assert one["compatibilities"] == ["EC2", "FARGATE"] and one["networkMode"] == "awsvpc"
    c = one["containerDefinitions"][0]
    assert c["essential"] is True and c["portMappings"] == [{"containerPort": 8080}]
    two = register(ecs, family)
    assert two["revision"] == 2
    got = ecs.describe_task_definition(taskDefinition=family, include=["TAGS"])
    assert got["taskDefinition"]["revision"] == 2 and "tags" in got
    assert ecs.describe_task_definition(taskDefinition=f"{family}:1", include=["TAGS"])["tags"] == [
        {"key": "k", "value": "v"}]
    assert ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"] == [
        one["taskDefinitionArn"], two["taskDefinitionArn"]]
    assert family in ecs.list_task_definition_families(familyPrefix=family)["families"]
    gone = ecs.deregister_task_definition(taskDefinition=f"{family}:2")["taskDefinition"]
    assert gone["status"] == "INACTIVE" and "deregisteredAt" in gone
    assert ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["revision"] == 1
    assert ecs.list_task_definitions(familyPrefix=family, status="INACTIVE")["taskDefinitionArns"] == [
        two["taskDefinitionArn"]]
    out = ecs.delete_task_definitions(taskDefinitions=[f"{family}:2", f"{family}:1"])
    assert [d["status"] for d in out["taskDefinitions"]] == ["DELETE_IN_PROGRESS"]
    assert out["failures"][0]["arn"] == f"{family}:1"
    assert register(ecs, family)["revision"] == 3
    refused(lambda: ecs.describe_task_definition(taskDefinition=f"{family}:9"), "ClientException",
            "Unable to describe task definition.")


def test_container_fields_nimbus_does_not_act_on_are_kept_as_given(ecs):
    """They were accepted and dropped: a deploy tool comparing what it
    registered with what DescribeTaskDefinition answers saw them vanish."""
    kept = {"dockerLabels": {"team": "café", "tier": "web"}, "startTimeout": 30, "interactive": True,
            "pseudoTerminal": False, "systemControls": [{"namespace": "net.core.somaxconn", "value": "1024"}],
            "versionConsistency": "disabled", "linuxParameters": {"initProcessEnabled": True}}
    family = unique_name("kept")
    made = register(ecs, family, containers=[{**container(), **kept}])["containerDefinitions"][0]
    got = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["containerDefinitions"][0]
    for c in (made, got):
        assert {k: c.get(k) for k in kept} == kept, c


def test_lists_page_on_past_items_removed_between_pages(ecs):
    family = unique_name("paged")
    for _ in range(11):
        register(ecs, family=family)
    arn = lambda n: f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{n}"  # noqa: E731
    first = ecs.list_task_definitions(familyPrefix=family, maxResults=2)
    assert first["taskDefinitionArns"] == [arn(1), arn(2)]
    # A prune loop deregisters what it was shown: the next page goes on
    # after it (it started over at revision 1 before).
    ecs.deregister_task_definition(taskDefinition=arn(2))
    second = ecs.list_task_definitions(familyPrefix=family, maxResults=8, nextToken=first["nextToken"])
    assert second["taskDefinitionArns"] == [arn(n) for n in range(3, 11)]
    # Revision 10 comes after 9, not after 1, in both orders.
    last = ecs.list_task_definitions(familyPrefix=family, maxResults=8, nextToken=second["nextToken"])
    assert last["taskDefinitionArns"] == [arn(11)] and "nextToken" not in last
    down = ecs.list_task_definitions(familyPrefix=family, sort="DESC", maxResults=2)
    assert down["taskDefinitionArns"] == [arn(11), arn(10)]
    down = ecs.list_task_definitions(familyPrefix=family, sort="DESC", maxResults=2, nextToken=down["nextToken"])
    assert down["taskDefinitionArns"] == [arn(9), arn(8)]
    seen = [a for p in ecs.get_paginator("list_task_definitions").paginate(
        familyPrefix=family, PaginationConfig={"PageSize": 3}) for a in p["taskDefinitionArns"]]
    assert seen == [arn(n) for n in range(1, 12) if n != 2]
    # A token that is none of ours, and a page size ECS does not take, are refused, not read as "from the start".
    for call in (lambda: ecs.list_clusters(nextToken="garbage!"), lambda: ecs.list_clusters(maxResults=0),
                 lambda: ecs.list_task_definition_families(maxResults=101)):
        refused(call, "InvalidParameterException")


@pytest.mark.parametrize("change, code, words", [
    (dict(cpu="256", memory="4096"), "ClientException",
     ["No Fargate configuration exists for given values: 256 CPU, 4096 memory."]),
    (dict(cpu="3 vCPU", memory="8GB"), "ClientException", ["No Fargate configuration exists", "3072 CPU"]),
    (dict(cpu="a lot"), "ClientException", ["Invalid 'CPU' setting"]),
    (dict(networkMode="bridge"), "ClientException", ["Fargate only supports network mode 'awsvpc'"]),
    (dict(networkMode="host"), "ClientException", ["Fargate only supports network mode 'awsvpc'"]),
    (dict(containers=[container(secrets=[{"name": "S", "valueFrom": "arn:x"}])]), "ClientException",
     ["secrets are not supported"]),
    (dict(containers=[container("a"), container("b")]), "ClientException", ["Port 8080 (tcp) is mapped more than once"]),
    (dict(containers=[container(portMappings=[{"containerPort": 80, "hostPort": 81}])]), "ClientException",
     ["host ports and container ports in port mappings must match"]),
    (dict(containers=[container("a"), container("a", portMappings=[])]), "ClientException", ["Duplicate container name"]),
    (dict(family="bad family"), "ClientException", ["up to 255 letters"]),
    # Near u32::MAX each: a sum that wraps would fit 512 MiB.
    (dict(containers=[container("a", memory=2147483647), container("b", memory=2147483647, portMappings=[]),
                      container("c", memory=2, portMappings=[])]), "ClientException",
     ["exceeds the task's memory (512 MiB)"]),
    (dict(requiresCompatibilities=["EC2"]), "ClientException", ["cluster mode"]),
])
def test_bad_task_definitions_change_nothing(ecs, change, code, words):
    family = change.pop("family", unique_name("bad"))
    refused(lambda: register(ecs, family, **change), code, *words)
    assert family not in ecs.list_task_definition_families(familyPrefix=family, status="ALL")["families"]


def test_a_missing_image_stops_the_task_with_cannot_pull(node, ecs):
    family = register(ecs)["family"]
    out = run(ecs, family, startedBy="tests", group="g1", tags=[{"key": "a", "value": "1"}],
              overrides={"containerOverrides": [{"name": "web", "command": ["serve"],
                                                 "environment": [{"name": "X", "value": "1"}]}]})
    assert out["failures"] == []
    task = out["tasks"][0]
    assert (task["lastStatus"], task["desiredStatus"], task["launchType"]) == ("PROVISIONING", "RUNNING", "FARGATE")
    assert task["taskArn"].startswith(arn("task/default/")) and task["startedBy"] == "tests"
    assert task["overrides"]["containerOverrides"][0]["command"] == ["serve"]
    assert task["attachments"][0]["type"] == "ElasticNetworkInterface"
    done = stopped(ecs, task["taskArn"])
    assert done["stopCode"] == "TaskFailedToStart"
    assert done["stoppedReason"].startswith("CannotPullContainerError: ") and MISSING_IMAGE in done["stoppedReason"]
    assert done["desiredStatus"] == "STOPPED" and done["version"] > task["version"]
    for stamp in ("createdAt", "pullStartedAt", "pullStoppedAt", "stoppingAt", "executionStoppedAt", "stoppedAt"):
        assert stamp in done, stamp
    assert done["createdAt"] <= done["pullStartedAt"] <= done["stoppedAt"]
    (c,) = done["containers"]
    assert c["lastStatus"] == "STOPPED" and c["reason"].startswith("CannotPullContainerError")
    # The CLI's waiters read the same documents: tasks-stopped succeeds,
    # tasks-running meets its failure state.
    code, _, err = aws_json(node, "ecs", "wait", "tasks-stopped", "--tasks", task["taskArn"])
    assert code == 0, err
    code, _, err = aws_json(node, "ecs", "wait", "tasks-running", "--tasks", task["taskArn"])
    assert code != 0 and "terminal failure state" in err, err
    # ListTasks lists RUNNING-desired tasks unless asked otherwise.
    assert task["taskArn"] not in ecs.list_tasks()["taskArns"]
    assert task["taskArn"] in ecs.list_tasks(desiredStatus="STOPPED", startedBy="tests")["taskArns"]
    assert task["taskArn"] in ecs.list_tasks(desiredStatus="STOPPED", family=family)["taskArns"]
    # Stopping a stopped task answers it as it is.
    assert ecs.stop_task(task=task["taskArn"], reason="done")["task"]["stopCode"] == "TaskFailedToStart"
    missing = ecs.describe_tasks(tasks=["0" * 32])["failures"]
    assert missing == [{"arn": arn(f"task/default/{'0' * 32}"), "reason": "MISSING"}]


def test_images_come_from_the_nodes_registry(node, ecs):
    repo = new_repo(node, "ecs")
    digest, _, _ = push_image(Registry(node), repo, "v1")
    image = f"127.0.0.1:{node.port}/{repo}"
    family = register(ecs, containers=[container(image=f"{image}:v1")])["family"]
    task = stopped(ecs, run(ecs, family)["tasks"][0]["taskArn"])
    # The image is pulled and unpacked; this node has no container runtime yet.
    (c,) = task["containers"]
    assert c["imageDigest"] == digest and "pullStoppedAt" in task
    assert task["stopCode"] == "TaskFailedToStart"
    assert task["stoppedReason"].startswith("CannotStartContainerError: "), task["stoppedReason"]
    family = register(ecs, containers=[container(image=f"{image}:no-such-tag")])["family"]
    task = stopped(ecs, run(ecs, family)["tasks"][0]["taskArn"])
    assert task["stoppedReason"].startswith("CannotPullContainerError: "), task["stoppedReason"]
    assert "no-such-tag" in task["stoppedReason"] and "imageDigest" not in task["containers"][0]


def test_run_task_from_the_cli_and_client_tokens(node, ecs):
    family = register(ecs)["family"]
    code, out, err = aws_json(node, "ecs", "run-task", "--task-definition", family, "--launch-type", "FARGATE",
                              "--network-configuration",
                              "awsvpcConfiguration={subnets=[subnet-1],assignPublicIp=DISABLED}")
    assert code == 0, err
    stopped(ecs, out["tasks"][0]["taskArn"])
    first = run(ecs, family, clientToken="token-1")["tasks"]
    again = run(ecs, family, clientToken="token-1")["tasks"]
    assert [t["taskArn"] for t in again] == [t["taskArn"] for t in first]
    # propagateTags=TASK_DEFINITION: the definition's tags too, the request's winning a shared key.
    tagged = register(ecs, tags=[{"key": "fromtd", "value": "1"}, {"key": "k", "value": "td"}])["family"]
    task = run(ecs, tagged, propagateTags="TASK_DEFINITION", tags=[{"key": "k", "value": "mine"}])["tasks"][0]
    tags = ecs.list_tags_for_resource(resourceArn=task["taskArn"])["tags"]
    assert sorted((t["key"], t["value"]) for t in tags) == [("fromtd", "1"), ("k", "mine")]


@pytest.mark.parametrize("change, code, words", [
    (dict(count=11), "InvalidParameterException", ["count"]),
    (dict(launchType="EC2"), "InvalidParameterException", ["cluster mode"]),
    (dict(networkConfiguration=None), "InvalidParameterException", ["Network Configuration must be provided"]),
    (dict(networkConfiguration={"awsvpcConfiguration": {"subnets": ["s"], "assignPublicIp": "ENABLED"}}),
     "InvalidParameterException", ["assignPublicIp ENABLED is not supported"]),
    (dict(overrides={"containerOverrides": [{"name": "nope"}]}), "InvalidParameterException",
     ["Override for container named nope is not a container in the TaskDefinition."]),
    (dict(overrides={"cpu": "256", "memory": "8192"}), "ClientException", ["No Fargate configuration exists"]),
    (dict(taskDefinition="no-such-family"), "InvalidParameterException", ["TaskDefinition not found."]),
    (dict(cluster="no-such-cluster"), "ClusterNotFoundException", ["Cluster not found."]),
    (dict(propagateTags="SERVICE"), "InvalidParameterException", ["SERVICE"]),
])
def test_bad_run_task_input_starts_nothing(ecs, change, code, words):
    family = register(ecs)["family"]
    params = dict(taskDefinition=family, launchType="FARGATE", networkConfiguration=NETWORK)
    params.update(change)
    params = {k: v for k, v in params.items() if v is not None}
    refused(lambda: ecs.run_task(**params), code, *words)
    assert ecs.list_tasks(family=family, desiredStatus="STOPPED")["taskArns"] == []
    assert ecs.list_tasks(family=family)["taskArns"] == []


def test_capacity_failures(ecs):
    family = register(ecs, cpu="1024", memory="2048")["family"]
    out = run(ecs, family, count=3)
    assert len(out["tasks"]) == 2
    assert [f["reason"] for f in out["failures"]] == ["RESOURCE:CPU"]
    for t in out["tasks"]:
        stopped(ecs, t["taskArn"])
    big = register(ecs, cpu="2048", memory="8GB")["family"]
    assert [f["reason"] for f in run(ecs, big)["failures"]] == ["RESOURCE:MEMORY"]
    assert [f["reason"] for f in run(ecs, register(ecs, cpu="4096", memory="8GB")["family"])["failures"]] == [
        "RESOURCE:CPU"]


def test_tags_on_clusters_definitions_and_tasks(ecs):
    cluster = ecs.create_cluster(clusterName=unique_name("tags"))["cluster"]["clusterArn"]
    definition = register(ecs)["taskDefinitionArn"]
    task = run(ecs, definition, cluster=cluster)["tasks"][0]["taskArn"]
    for resource in (cluster, definition, task):
        ecs.tag_resource(resourceArn=resource, tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
        ecs.untag_resource(resourceArn=resource, tagKeys=["a"])
        assert ecs.list_tags_for_resource(resourceArn=resource)["tags"] == [{"key": "b", "value": "2"}]
    described = ecs.describe_tasks(cluster=cluster, tasks=[task], include=["TAGS"])["tasks"][0]
    assert described["tags"] == [{"key": "b", "value": "2"}]
    refused(lambda: ecs.tag_resource(resourceArn=cluster, tags=[{"key": "aws:x", "value": "1"}]),
            "InvalidParameterException", "reserved")
    refused(lambda: ecs.list_tags_for_resource(resourceArn=arn("cluster/none-such")), "ClusterNotFoundException")
    refused(lambda: ecs.list_tags_for_resource(resourceArn=arn("task/default/" + "f" * 32)),
            "ResourceNotFoundException")


def test_unsupported_and_unknown_operations_are_refused_clearly(node, ecs):
    refused(lambda: ecs.list_container_instances(), "UnsupportedFeatureException", "ListContainerInstances")
    target = "AmazonEC2ContainerServiceV20141113."
    json_11 = {"Content-Type": "application/x-amz-json-1.1"}

    def call(op, body, sign=True):
        headers = dict(json_11, **{"X-Amz-Target": target + op})
        if sign:
            status, _, out = signed_request(node, "POST", "/", body, headers, service="ecs")
        else:
            status, _, out = send("POST", node.endpoint + "/", body, headers)
        return status, json.loads(out)

    assert call("ListClusters", b"{}", sign=False) == (403, {
        "__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"})
    status, out = call("NoSuchOperation", b"{}")
    assert (status, out["__type"]) == (400, "UnknownOperationException")
    status, out = call("RunTask", b'{"taskDefinition": 5}')
    assert (status, out["__type"]) == (400, "SerializationException")
    status, out = call("RunTask", b"{}")
    assert (status, out["__type"]) == (400, "InvalidParameterException"), out
    assert "taskDefinition" in out["message"]


def test_state_survives_kill_9(tmp_path):
    node = Server(tmp_path / "data", args=CAPACITY).start()
    try:
        ecs = aws_client(node, "ecs")
        ecs.create_cluster(clusterName="kept")
        family = register(ecs)["family"]
        task = run(ecs, family, cluster="kept")["tasks"][0]["taskArn"]
        stopped(ecs, task, cluster="kept")
        node.kill()
        node.start()
        ecs = aws_client(node, "ecs")
        assert ecs.describe_clusters(clusters=["kept"])["clusters"][0]["status"] == "ACTIVE"
        assert ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["revision"] == 1
        t = ecs.describe_tasks(cluster="kept", tasks=[task])["tasks"][0]
        assert t["lastStatus"] == "STOPPED" and t["stopCode"] == "TaskFailedToStart"
        assert register(ecs, family)["revision"] == 2
    finally:
        node.stop()


@pytest.fixture(scope="module")
def busybox_layout(tmp_path_factory):
    layout = tmp_path_factory.mktemp("ecs-images") / "busybox"
    sh("sh", RECIPES / "build-busybox-image.sh", layout, "v1")
    return layout


@pytest.fixture(scope="module")
def busybox(node, busybox_layout):
    """The busybox image, pushed to the node; its URI."""
    return push(node, busybox_layout, "v1")


# A static page served by busybox's httpd, as PID 1 of the container.
HTTPD = ["/bin/sh", "-c", "/bin/busybox mkdir -p /tmp/www && echo hello-from-task > /tmp/www/index.html"
         " && exec /bin/busybox httpd -f -p 8080 -h /tmp/www"]


def running(ecs, task_arn):
    def up():
        t = ecs.describe_tasks(tasks=[task_arn])["tasks"][0]
        assert t["lastStatus"] != "STOPPED", t
        return t if t["lastStatus"] == "RUNNING" else None
    return wait_for(up, f"{task_arn} to run")


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_a_web_server_task_answers_on_its_port_and_stops(node, ecs, busybox):
    web = container(image=busybox, entryPoint=HTTPD, stopTimeout=2)
    family = register(ecs, containers=[web])["family"]
    arn = run(ecs, family)["tasks"][0]["taskArn"]
    code, _, err = aws_json(node, "ecs", "wait", "tasks-running", "--tasks", arn)
    assert code == 0, err
    task = running(ecs, arn)
    (binding,) = task["containers"][0]["networkBindings"]
    assert binding["containerPort"] == 8080 and binding["bindIP"] == "127.0.0.1"
    url = f"http://127.0.0.1:{binding['hostPort']}/index.html"
    assert wait_for(lambda: _try(fetch, url), "the page") == "hello-from-task\n"
    assert "startedAt" in task and task["containers"][0]["lastStatus"] == "RUNNING"
    assert arn in ecs.list_tasks(family=family)["taskArns"]
    ecs.stop_task(task=arn, reason="test over")
    done = stopped(ecs, arn)
    assert (done["stopCode"], done["stoppedReason"]) == ("UserInitiated", "test over")
    assert done["containers"][0]["exitCode"] in (143, 137)
    with pytest.raises(OSError):
        fetch(url)


def _try(f, *args):
    try:
        return f(*args)
    except OSError:
        return None


def test_two_containers_share_localhost_and_an_essential_exit_stops_the_task(ecs, busybox):
    web = container("web", image=busybox, entryPoint=HTTPD, stopTimeout=2)
    # The probe fetches the page over the task's own loopback, then exits
    # with 3: it is essential, so the task stops with it.
    probe = {"name": "probe", "image": busybox, "entryPoint": ["/bin/sh", "-c",
             "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/busybox wget -q -O /tmp/got http://127.0.0.1:8080/index.html"
             " && break; /bin/busybox sleep 0.2; done; cat /tmp/got; exit 3"]}
    family = register(ecs, containers=[web, probe])["family"]
    arn = run(ecs, family)["tasks"][0]["taskArn"]
    done = stopped(ecs, arn)
    assert done["stopCode"] == "EssentialContainerExited", done
    assert done["stoppedReason"] == "Essential container in task exited"
    exits = {c["name"]: c.get("exitCode") for c in done["containers"]}
    assert exits["probe"] == 3 and exits["web"] in (143, 137), exits


@pytest.mark.parametrize("entry, why", [
    ("/nope", 'exec: "/nope": stat /nope: no such file or directory'),
    ("nope", 'exec: "nope": executable file not found in $PATH'),
])
def test_a_missing_entrypoint_fails_the_start_and_never_runs(node, ecs, busybox, entry, why):
    family = register(ecs, containers=[container(image=busybox, entryPoint=[entry])])["family"]
    arn = run(ecs, family)["tasks"][0]["taskArn"]
    code, _, err = aws_json(node, "ecs", "wait", "tasks-running", "--tasks", arn)
    assert code != 0 and "terminal failure state" in err, err
    done = stopped(ecs, arn)
    reason = ("CannotStartContainerError: ResourceInitializationError: failed to create new container runtime task:"
              " failed to create shim task: OCI runtime create failed: runc create failed: unable to start container"
              f" process: {why}: unknown")
    assert (done["stopCode"], done["stoppedReason"]) == ("TaskFailedToStart", reason), done
    assert done["containers"][0]["reason"] == reason and "exitCode" not in done["containers"][0]
    # RUNNING is reported only once the program was executed: never here.
    assert "startedAt" not in done, done


def test_a_task_running_through_kill_9_is_reported_stopped(tmp_path, busybox_layout):
    node = Server(tmp_path / "data", args=CAPACITY).start()
    try:
        ecs = aws_client(node, "ecs")
        image = push(node, busybox_layout, "v1")
        web = container(image=image, entryPoint=HTTPD, stopTimeout=2,
                        mountPoints=[{"sourceVolume": "v", "containerPath": "/scratch"}])
        family = register(ecs, containers=[web], volumes=[{"name": "v"}])["family"]
        arn = run(ecs, family)["tasks"][0]["taskArn"]
        port = running(ecs, arn)["containers"][0]["networkBindings"][0]["hostPort"]
        tasks_dir = tmp_path / "data" / "worker" / "tasks"
        assert (tasks_dir / arn.rsplit("/", 1)[1] / "volumes").is_dir()
        killed_at = time.time()
        node.kill()
        # The start comes after the kill: the time between is not the task's, nor billed.
        node.start()
        # What the killed node left of the task (its volumes' tmpfs, its
        # roots and slots) is gone, not only unmounted.
        assert not tasks_dir.exists() or list(tasks_dir.iterdir()) == []
        ecs = aws_client(node, "ecs")
        t = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        assert (t["lastStatus"], t["desiredStatus"], t["stopCode"]) == ("STOPPED", "STOPPED", "TerminationNotice")
        assert "restarted" in t["stoppedReason"]
        assert t["startedAt"].timestamp() <= t["stoppedAt"].timestamp() <= killed_at, t
        assert ecs.list_tasks()["taskArns"] == []
        with pytest.raises(OSError):
            fetch(f"http://127.0.0.1:{port}/index.html")
        again = run(ecs, family)["tasks"][0]["taskArn"]
        assert running(ecs, again)["lastStatus"] == "RUNNING"
        ecs.stop_task(task=again)
        stopped(ecs, again)
    finally:
        node.stop()
