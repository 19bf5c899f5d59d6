"""Acknowledged writes survive kill -9; shutdown is graceful; keys and blobs
are managed in the data directory."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from conftest import (BIN, HELLO_ZIP, ROLE, Server, aws_client, blob_files, create, impatient_client, make_zip,
                      sqs_client, store_write_locked, unique_name, wait_for)


def full_state(lam, names):
    state = {}
    for n in names:
        f = lam.get_function(FunctionName=n)
        state[n] = {
            "config": f["Configuration"],
            "tags": f.get("Tags"),
            "concurrency": f.get("Concurrency"),
            "versions": lam.list_versions_by_function(FunctionName=n)["Versions"],
            "aliases": lam.list_aliases(FunctionName=n)["Aliases"],
            "policy": lam.get_policy(FunctionName=n)["Policy"],
        }
    state["layers"] = lam.list_layer_versions(LayerName="shared")["LayerVersions"]
    state["usage"] = lam.get_account_settings()["AccountUsage"]
    return state


def test_kill_9_loses_nothing_acknowledged(private_server, tmp_path):
    s = private_server()
    lam = s.client()
    lv = lam.publish_layer_version(LayerName="shared", Content={"ZipFile": HELLO_ZIP})["LayerVersionArn"]
    names = ["alpha", "beta"]
    for n in names:
        create(lam, n, Tags={"owner": n}, Layers=[lv])
        lam.publish_version(FunctionName=n)
        lam.create_alias(FunctionName=n, Name="live", FunctionVersion="1")
        lam.add_permission(FunctionName=n, StatementId="s", Action="lambda:InvokeFunction", Principal="*")
    lam.put_function_concurrency(FunctionName="beta", ReservedConcurrentExecutions=5)
    new_zip = make_zip({"app.py": "z = 3\n"})
    lam.update_function_code(FunctionName="alpha", ZipFile=new_zip)
    before = full_state(lam, names)

    assert s.kill(signal.SIGKILL) == -signal.SIGKILL
    restarted = private_server(s.data_dir)
    lam2 = restarted.client()
    after = full_state(lam2, names)
    for n in names:
        for v in (before[n]["config"], after[n]["config"]):
            v.pop("ResponseMetadata", None)
    assert after == before
    loc = lam2.get_function(FunctionName="alpha")["Code"]["Location"]
    import urllib.request
    assert urllib.request.urlopen(loc).read() == new_zip


def test_sigterm_exits_zero(private_server):
    s = private_server()
    create(s.client())
    assert s.kill(signal.SIGTERM) == 0


def test_blobs_are_deduplicated_and_collected(private_server):
    s = private_server()
    lam = s.client()
    assert blob_files(s.data_dir) == []
    a = create(lam)["FunctionName"]
    b = create(lam)["FunctionName"]
    assert len(blob_files(s.data_dir)) == 1, "same zip stored once"
    other = make_zip({"app.py": "other = 1\n"})
    lam.publish_layer_version(LayerName="only", Content={"ZipFile": other})
    assert len(blob_files(s.data_dir)) == 2
    lam.delete_layer_version(LayerName="only", VersionNumber=1)
    assert len(blob_files(s.data_dir)) == 1
    lam.delete_function(FunctionName=a)
    assert len(blob_files(s.data_dir)) == 1, "still used by the other function"
    lam.delete_function(FunctionName=b)
    assert blob_files(s.data_dir) == []


def test_layer_blob_outlives_layer_version_while_used(private_server):
    s = private_server()
    lam = s.client()
    layer_zip = make_zip({"python/x.py": "x = 1\n"})
    lv = lam.publish_layer_version(LayerName="l", Content={"ZipFile": layer_zip})["LayerVersionArn"]
    name = create(lam, Layers=[lv])["FunctionName"]
    lam.delete_layer_version(LayerName="l", VersionNumber=1)
    assert len(blob_files(s.data_dir)) == 2, "the function still uses the layer's content"
    lam.delete_function(FunctionName=name)
    assert blob_files(s.data_dir) == []


def test_generated_keys_are_private_printed_and_reused(private_server):
    s = private_server(env_keys=False)
    key_file = s.data_dir / "credentials.json"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key, secret = s.credentials()
    create(s.client())
    out = s.output()
    assert f"export AWS_ACCESS_KEY_ID={key}" in out
    assert f"export AWS_SECRET_ACCESS_KEY={secret}" in out
    assert re.search(r"export AWS_ENDPOINT_URL=http://127\.0\.0\.1:\d+", out)
    s.kill(signal.SIGTERM)
    again = private_server(s.data_dir, env_keys=False)
    assert again.credentials() == (key, secret)
    assert len(again.client().list_functions()["Functions"]) == 1


def test_writes_whose_client_gave_up_mid_commit_take_full_effect(tmp_path):
    """A client that stops waiting while its write waits for the store does
    not stop the write half way. Before, the commit still happened (it was
    handed to the store), but what follows it did not: the update of a
    function stayed InProgress (refusing every later change), an Event
    invoke was queued but not run, a GET served the replaced object, and a
    disabled mapping kept polling, each until the next start. An outside
    transaction holds the store's write lock to keep the commits waiting."""
    srv = Server(tmp_path / "data", args=["--isolation", "process"]).start()
    try:
        def impatient(service):
            return impatient_client(srv, service)

        def gives_up(call):
            with store_write_locked(srv), pytest.raises(ReadTimeoutError):
                call()

        lam, s3, sqs = srv.client(), aws_client(srv, "s3"), sqs_client(srv)
        marks = tmp_path / "ran"
        name = unique_name("gaveup")
        lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                            Code={"ZipFile": make_zip({"app.py": (
                                "def handler(event, context):\n"
                                "    if 'mark' in event:\n"
                                "        open(event['mark'], 'a').write('ran\\n')\n")})})

        gives_up(lambda: impatient("lambda").update_function_configuration(FunctionName=name, Description="new"))

        def updated():
            c = lam.get_function_configuration(FunctionName=name)
            return (c["Description"], c["LastUpdateStatus"]) == ("new", "Successful")
        wait_for(updated, "the update to finish")

        gives_up(lambda: impatient("lambda").invoke(FunctionName=name, InvocationType="Event",
                                                    Payload=json.dumps({"mark": str(marks)})))
        wait_for(lambda: marks.exists(), "the queued event to run")

        s3.create_bucket(Bucket="gaveup")
        s3.put_object(Bucket="gaveup", Key="k", Body=b"v1")
        gives_up(lambda: impatient("s3").put_object(Bucket="gaveup", Key="k", Body=b"v2"))
        wait_for(lambda: s3.get_object(Bucket="gaveup", Key="k")["Body"].read() == b"v2", "the new object")

        url = sqs.create_queue(QueueName="gaveup", Attributes={"VisibilityTimeout": "5"})["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        uuid = lam.create_event_source_mapping(EventSourceArn=queue_arn, FunctionName=name)["UUID"]
        wait_for(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Enabled", "the mapping to poll")
        gives_up(lambda: impatient("lambda").update_event_source_mapping(UUID=uuid, Enabled=False))
        wait_for(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Disabled", "the mapping to stop")
    finally:
        srv.stop()


def nobody_reads(path):
    """Whether the host's `nobody` user can read a file."""
    r = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(path)], capture_output=True)
    return r.returncode == 0


def test_the_data_directory_is_its_owners_alone(private_server):
    # Under a directory every user may enter (pytest's own is 0700), so
    # that only the data directory's mode keeps other users out.
    base = Path(tempfile.mkdtemp(prefix="nimbus-private-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        probe = base / "probe"
        probe.write_text("readable")
        assert nobody_reads(probe), "nobody reads a 0644 file here, so the checks below can fail"
        s = private_server(base / "data")
        create(s.client(), Environment={"Variables": {"SECRET": "s3cr3t"}})
        assert stat.S_IMODE(os.stat(s.data_dir).st_mode) == 0o700
        assert not nobody_reads(s.data_dir / "metadata.db")
        assert s.kill(signal.SIGTERM) == 0

        # A data directory opened up (or made by an older Nimbus) is made
        # private again at start, with one line naming it.
        os.chmod(s.data_dir, 0o755)
        assert nobody_reads(s.data_dir / "metadata.db"), "its files are 0644"
        again = private_server(s.data_dir)
        assert stat.S_IMODE(os.stat(s.data_dir).st_mode) == 0o700
        assert not nobody_reads(s.data_dir / "metadata.db")
        said = [l for l in again.output().splitlines() if "open to other users" in l]
        assert len(said) == 1 and str(s.data_dir) in said[0], said
        assert again.kill(signal.SIGTERM) == 0

        # Another user's directory is not taken: they could have planted
        # the key file the node would use, or links its lock would follow.
        theirs = base / "theirs"
        theirs.mkdir(mode=0o700)
        planted = {"access_key_id": "NKIAPLANTEDPLANTED00", "secret_access_key": "p" * 40}
        (theirs / "credentials.json").write_text(json.dumps(planted))
        victim = base / "victim"
        victim.write_text("root's own")
        (theirs / "nimbus.lock").symlink_to(victim)
        subprocess.run(["chown", "-hR", "nobody", str(theirs)], check=True)
        r = subprocess.run([BIN, "serve", "--data-dir", str(theirs), "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and f"the data directory {theirs} belongs to uid" in r.stderr, r.stderr
        assert victim.read_text() == "root's own"
    finally:
        shutil.rmtree(base, ignore_errors=True)


SLOW_ZIP = make_zip({"app.py": "import time\n\n\ndef handler(event, context):\n"
                               "    time.sleep(event['sleep'])\n    return 'slept'\n"})


@pytest.mark.parametrize("isolation", ["namespaces", "process"])
def test_ctrl_c_at_a_terminal_lets_in_flight_invokes_finish(tmp_path, isolation):
    # A terminal's Ctrl-C signals its whole foreground process group: the
    # server's own here, as when it is started from a shell.
    s = Server(tmp_path / "data", args=["--isolation", isolation], new_session=True).start()
    try:
        lam = s.client()
        name = create(lam, zip_bytes=SLOW_ZIP, Timeout=60)["FunctionName"]
        # Warm, and the runtime's templates made, before the signal.
        assert lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": 0}))["StatusCode"] == 200
        answered = {}
        slow = threading.Thread(target=lambda: answered.update(
            r=lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": 2}))))
        slow.start()
        wait_for(lambda: s.busy_environments() >= 1, "the slow invoke to be under way")
        os.killpg(s.proc.pid, signal.SIGINT)
        slow.join(timeout=60)
        r = answered["r"]
        assert "FunctionError" not in r and json.loads(r["Payload"].read()) == "slept", r
        assert s.proc.wait(timeout=30) == 0, s.output()[-3000:]
        assert "KeyboardInterrupt" not in s.output() and "signal: 2" not in s.output(), s.output()[-3000:]
    finally:
        s.stop()


def test_a_second_signal_stops_at_once_without_the_invokes_in_flight(tmp_path):
    s = Server(tmp_path / "data").start()
    try:
        lam = s.client()
        name = create(lam, zip_bytes=SLOW_ZIP, Timeout=900)["FunctionName"]
        assert lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": 0}))["StatusCode"] == 200
        # An invoke far longer than the test: only a stop at once ends it
        # (and its client's connection with it).
        def long_invoke():
            try:
                lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": 600}))
            except Exception:
                pass
        threading.Thread(target=long_invoke, daemon=True).start()
        wait_for(lambda: s.busy_environments() >= 1, "the long invoke to be under way")
        s.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "finishing 1 in-flight request(s)" in s.output(), "the stop to say what it waits for")
        assert s.proc.poll() is None, "the first signal waits for the invoke"
        s.proc.send_signal(signal.SIGINT)
        assert s.proc.wait(timeout=20) == 1, s.output()[-3000:]
        out = s.output()
        assert "stopping at once: 1 request(s) left unfinished" in out
        assert "error: stopped at a second signal, 1 request(s) unfinished" in out
        # Stopping at once still takes the environments down.
        assert str(s.data_dir) not in Path("/proc/self/mountinfo").read_text(), "no mount is left behind"
    finally:
        s.stop()


def test_a_graceful_stop_finishes_a_request_whose_client_left(tmp_path):
    """A request whose client gave up runs on; a graceful stop waits for it
    and counts it, rather than dropping it with the runtime (it said
    "finishing 0 in-flight request(s)" and lost the acknowledged-to-nobody
    write half way)."""
    srv = Server(tmp_path / "data", args=["--isolation", "process"]).start()
    try:
        sqs = sqs_client(srv)
        url = sqs.create_queue(QueueName="stopping")["QueueUrl"]
        with store_write_locked(srv):
            with pytest.raises(ReadTimeoutError):
                impatient_client(srv, "sqs").tag_queue(QueueUrl=url, Tags={"kept": "yes"})
            srv.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "finishing 1 in-flight request(s)" in srv.output(), "the stop to count the request")
            assert srv.proc.poll() is None, "the stop waits for it"
        assert srv.proc.wait(timeout=30) == 0
    finally:
        srv.stop()
    srv = Server(tmp_path / "data", args=["--isolation", "process"]).start()
    try:
        assert sqs_client(srv).list_queue_tags(QueueUrl=url)["Tags"] == {"kept": "yes"}
    finally:
        srv.stop()


NAP_ZIP = make_zip({"app.py": "import time\n\n\ndef handler(event, context):\n    time.sleep(2)\n    return 'napped'\n"})


def messages(sqs, url):
    """Every message a queue holds: visible, in flight or delayed."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attrs[n]) for n in names)


def test_a_graceful_stop_lets_the_nodes_own_invocations_end(tmp_path):
    """A mapping's batch and an async event under way when the node is asked
    to stop run to their ends, as requests do: the batch is deleted (it was
    cut short, and the restart sent it to the dead-letter queue as if it had
    failed) and the event's success is delivered once (it ran again)."""
    s = Server(tmp_path / "data", args=["--isolation", "process"]).start()
    try:
        lam, sqs = s.client(), sqs_client(s)
        name = create(lam, zip_bytes=NAP_ZIP, Timeout=30)["FunctionName"]
        dlq = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
        jobs = sqs.create_queue(QueueName=unique_name("jobs"), Attributes={
            "RedrivePolicy": redrive, "VisibilityTimeout": "60"})["QueueUrl"]
        jobs_arn = sqs.get_queue_attributes(QueueUrl=jobs, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        done = sqs.create_queue(QueueName=unique_name("done"))["QueueUrl"]
        done_arn = sqs.get_queue_attributes(QueueUrl=done, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": done_arn}})
        uuid = lam.create_event_source_mapping(FunctionName=name, EventSourceArn=jobs_arn, BatchSize=1)["UUID"]
        wait_for(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Enabled", "the mapping")
        sqs.send_message(QueueUrl=jobs, MessageBody="job-1")
        assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
        wait_for(lambda: s.busy_environments() == 2, "the batch and the event to be under way")
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=30) == 0, s.output()[-3000:]
        s.start()
        sqs = sqs_client(s)
        # Right after the start, before any poller or dispatcher could act again.
        assert (messages(sqs, jobs), messages(sqs, dlq)) == (0, 0)
        (record,) = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=done)["Messages"]]
        assert (record["requestContext"]["approximateInvokeCount"], record["responsePayload"]) == (1, "napped")
    finally:
        s.stop()


def test_a_graceful_stop_ends_long_polls_at_once(tmp_path):
    """Once the listener is closed no message can arrive: a receive waiting
    20 seconds answers empty at the stop, which does not wait it out."""
    s = Server(tmp_path / "data", args=["--isolation", "process"]).start()
    try:
        sqs = sqs_client(s)
        url = sqs.create_queue(QueueName="idle")["QueueUrl"]
        got = {}
        poll = threading.Thread(target=lambda: got.update(r=sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)))
        poll.start()
        wait_for(lambda: s.requests_in_flight() == 1, "the receive to wait")
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=10) == 0, s.output()[-3000:]
        poll.join(timeout=10)
        assert got["r"].get("Messages", []) == []
    finally:
        s.stop()


def test_writes_once_a_full_disk_has_room_again_are_stored(tmp_path):
    """A commit that fails on a full disk is rolled back by SQLite itself;
    the store's connection must not go on counting it open. It did, and
    then began each later transaction as a savepoint nothing committed:
    writes answered 200 once the disk had room again were seen by one read
    and not the next, and lost at kill -9, while other writes failed with
    "database is locked" until a restart."""
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(data)], check=True)
    s = Server(data, args=["--isolation", "process", "--prewarm", "0", "--log-disk-floor-mb", "1"])
    try:
        s.start()
        logs, sqs, s3 = aws_client(s, "logs"), sqs_client(s), aws_client(s, "s3")
        s3.create_bucket(Bucket="kept")
        for i in range(8):
            s3.put_object(Bucket="kept", Key=f"k{i}", Body=b"x")
        # Every last block: the write-ahead log cannot grow by a page.
        for block in ("1M", "4k"):
            subprocess.run(["dd", "if=/dev/zero", f"of={data}/filler-{block}", f"bs={block}"], capture_output=True)
        failed = 0
        for i in range(8):
            for call in (lambda: s3.delete_object(Bucket="kept", Key=f"k{i}"),
                         lambda: logs.create_log_group(logGroupName=f"full-{i}"),
                         lambda: sqs.create_queue(QueueName=f"full-{i}")):
                try:
                    call()
                except ClientError as e:
                    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 500, e.response
                    failed += 1
        assert failed > 0, "the full disk failed some writes"
        for filler in data.glob("filler-*"):
            filler.unlink()
        for i in range(8):
            logs.create_log_group(logGroupName=f"room-{i}")
            sqs.create_queue(QueueName=f"room-{i}")
            s3.delete_object(Bucket="kept", Key=f"k{i}")
            s3.put_object(Bucket="kept", Key=f"room-{i}", Body=b"x")

        def stored():
            groups = {g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix="room-")["logGroups"]}
            queues = {u.rsplit("/", 1)[1] for u in sqs.list_queues(QueueNamePrefix="room-").get("QueueUrls", [])}
            keys = {o["Key"] for o in s3.list_objects_v2(Bucket="kept").get("Contents", [])}
            return groups, queues, keys

        want = {f"room-{i}" for i in range(8)}
        for _ in range(6):  # each read may come from another of the store's connections
            assert stored() == (want, want, want)
        s.kill()
        s.start()
        logs, sqs, s3 = aws_client(s, "logs"), sqs_client(s), aws_client(s, "s3")
        assert stored() == (want, want, want)
    finally:
        if s.proc:
            s.kill()
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_a_clean_stop_leaves_everything_in_metadata_db(private_server, tmp_path):
    """After a graceful stop the write-ahead log is moved into the database
    file: `metadata.db` copied alone (a backup) holds what was acknowledged."""
    import sqlite3
    s = private_server()
    lam = s.client()
    name = create(lam)["FunctionName"]
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=30) == 0, s.output()[-3000:]
    copy = tmp_path / "backup.db"
    shutil.copy(s.data_dir / "metadata.db", copy)
    db = sqlite3.connect(str(copy))
    try:
        assert db.execute("SELECT count(*) FROM functions WHERE name = ?", (name,)).fetchone() == (1,)
    finally:
        db.close()
