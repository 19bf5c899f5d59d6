"""The default isolation (namespaces, as root): what a function can and
cannot see or do, limits, and teardown. The session server runs this mode."""

import base64
import concurrent.futures
import json
import os
import re
import signal
import threading
from collections import Counter
from pathlib import Path


from conftest import ROLE, Server, make_zip, mount_table, unique_name, wait_for

PROBE = '''
import os, pwd, socket

def probe(path):
    try:
        if os.path.isdir(path):
            os.listdir(path)
            return "listable"
        with open(path, "rb") as f:
            f.read(1)
        return "readable"
    except FileNotFoundError:
        return "absent"
    except OSError as e:
        return type(e).__name__

def handler(event, context):
    out = {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "host": socket.gethostname(),
           "user": pwd.getpwuid(os.getuid()).pw_name,
           "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
           "paths": {p: probe(p) for p in event["paths"]},
           "cgroup": open("/proc/self/cgroup").read(),
           "init_cmdline": open("/proc/1/cmdline", "rb").read().decode(errors="replace"),
           "caps": {l.split(":")[0]: int(l.split()[1], 16) for l in open("/proc/self/status")
                    if l.startswith("Cap")},
           "no_new_privs": [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")]}
    for target in ("/var/task/new", "/usr/evil", "/etc/evil"):
        try:
            open(target, "w").close()
            out[target] = "written"
        except OSError as e:
            out[target] = type(e).__name__
    with open("/tmp/scratch", "w") as f:
        f.write("mine")
    st = os.statvfs("/tmp")
    out["tmp_bytes"] = st.f_blocks * st.f_frsize
    return out

def hog(event, context):
    data = bytearray(event["mb"] * 1024 * 1024)
    for i in range(0, len(data), 4096):
        data[i] = 1
    return len(data)
'''


def deploy(lam, **kw):
    name = unique_name("sb")
    params = dict(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                  Code={"ZipFile": make_zip({"app.py": PROBE})}, Timeout=30)
    params.update(kw)
    lam.create_function(**params)
    return name


def call(lam, name, payload):
    r = lam.invoke(FunctionName=name, Payload=json.dumps(payload), LogType="Tail")
    return r, json.loads(r["Payload"].read())


# Where a node's default `--sandbox-uids` lie: each sandbox runs as its own host user.
SANDBOX_UIDS = range(0x7000_0000, 0x7100_0000)


def test_a_function_sees_only_its_own_sandbox(lam, server):
    other = deploy(lam)
    _, theirs = call(lam, other, {"paths": []})
    name = deploy(lam, EphemeralStorage={"Size": 600})
    paths = ["/etc/shadow", "/root", str(server.data_dir), str(server.data_dir / "worker" / "code"),
             "/var/task/app.py", "/proc/1/environ"]
    r, out = call(lam, name, {"paths": paths})
    assert "FunctionError" not in r, out
    # Forked from the runtime's zygote into its sandbox: PID 3 there, beside
    # only the sandbox's own init (PID 1), whose memory it cannot read.
    assert (out["pid"], out["host"], out["user"]) == (3, "nimbus", "sbx_user1051")
    assert out["uid"] in SANDBOX_UIDS and out["gid"] == out["uid"] != theirs["uid"], (out["uid"], theirs["uid"])
    assert out["procs"] == [1, 3], "no other process is visible"
    assert out["paths"]["/proc/1/environ"] == "PermissionError"
    assert str(server.data_dir) not in out["init_cmdline"], "the sandbox's spec is not on its PID 1's command line"
    assert out["caps"] == {s: 0 for s in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}, out["caps"]
    assert out["no_new_privs"] == ["1"]
    assert out["paths"]["/etc/shadow"] == "absent" and out["paths"]["/root"] == "absent"
    assert out["paths"][str(server.data_dir)] == "absent", "the data dir (and other functions' code) is not there"
    assert out["paths"]["/var/task/app.py"] == "readable"
    assert all(out[t] != "written" for t in ("/var/task/new", "/usr/evil", "/etc/evil")), out
    assert out["tmp_bytes"] == 600 * 1024 * 1024


INOTIFY = '''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
held = []

def handler(event, context):
    while len(held) < event["hold"]:
        fd = libc.inotify_init()
        if fd < 0:
            break
        held.append(fd)
    fd = libc.inotify_init()
    if fd >= 0:
        os.close(fd)
    return {"uid": os.getuid(), "held": len(held), "another": fd >= 0, "errno": ctypes.get_errno()}
'''


def test_what_the_kernel_counts_per_user_is_each_sandboxs_own(lam):
    """The kernel bounds some things per user across the host: inotify
    instances (128 here), processes, pending signals. Were every sandbox
    one user, a function holding its 128 inotify instances would leave every
    other function on the node none."""
    hog, victim = unique_name("inotify-hog"), unique_name("inotify-victim")
    for name in (hog, victim):
        lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                            Code={"ZipFile": make_zip({"app.py": INOTIFY})}, Timeout=30)
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    _, held = call(lam, hog, {"hold": limit + 10})
    assert (held["held"], held["another"], held["errno"]) == (limit, False, 24), held  # EMFILE
    _, other = call(lam, victim, {"hold": 0})
    assert other["another"], other
    assert other["uid"] != held["uid"] and {other["uid"], held["uid"]} <= set(SANDBOX_UIDS)
    # The hog's environment held them all the while: the same one answers.
    _, again = call(lam, hog, {"hold": 0})
    assert (again["uid"], again["held"]) == (held["uid"], limit), "the same warm environment"


CEILING = '''
import threading
threading.stack_size(256 * 1024)
held, kept = [], []

def handler(event, context):
    stop = threading.Event()
    threads = []
    try:
        while len(threads) < event.get("threads", 0):
            threads.append(threading.Thread(target=stop.wait, daemon=True))
            threads[-1].start()
    except RuntimeError:  # can't start new thread
        threads.pop()
    started = len(threads)
    if event.get("hold"):
        held.append(stop)
    else:
        stop.set()
        for t in threads:  # their ids are free again before this returns
            t.join()
    if event.get("mb"):
        kept.append(bytearray(event["mb"] << 20))
        for i in range(0, len(kept[-1]), 4096):
            kept[-1][i] = 1
    return {"started": started, "kept_mb": sum(len(k) for k in kept) >> 20}
'''


def test_all_sandboxes_together_stay_under_the_nodes_ceiling(tmp_path):
    """The host's process ids are few (32,768 here): 32 environments of
    1,024 threads would hold them all, and the node could start no thread.
    A node's sandboxes share a ceiling of ids and memory below the host's."""
    node = Server(tmp_path / "data", args=["--sandbox-pids", "1400", "--sandbox-memory-mb", "900"]).start()
    try:
        lam = node.client()
        names = [unique_name("ceiling") for _ in range(3)]
        for name in names:
            lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                                Code={"ZipFile": make_zip({"app.py": CEILING})}, MemorySize=1024, Timeout=30)
        a, b, c = names
        _, got = call(lam, a, {"threads": 900, "hold": True})
        assert got["started"] == 900, got
        _, got = call(lam, b, {"threads": 900})
        assert 0 < got["started"] < 500, "what A holds is not B's to take: " + str(got)
        assert lam.get_function(FunctionName=b)["Configuration"]["State"] == "Active", "the node serves on"
        _, got = call(lam, b, {"threads": 300})
        assert got["started"] == 300, "B let its threads go"

        memory, pids = node.cgroups()[0], node.cgroups()[-1]
        limit = memory / ("memory.limit_in_bytes" if memory.parent.name == "memory" else "memory.max")
        assert (int(limit.read_text()), int((pids / "pids.max").read_text())) == (900 << 20, 1400)
        # Memory: A keeps 500 MB; C's 500 MB more cannot be had beside it:
        # within the ceiling the kernel kills one of them, or both (either
        # may be the larger when it looks, and a victim's memory goes back
        # only once it is reaped).
        _, got = call(lam, a, {"mb": 500})
        assert got["kept_mb"] == 500, got
        r, c_got = call(lam, c, {"mb": 500})
        c_killed = r.get("FunctionError") == "Unhandled" and c_got["errorType"].startswith("Runtime.")
        r, a_got = call(lam, a, {})
        # A new environment (test_environments: a runtime that hung up is
        # handed nothing). Or A's own, killed while it waited yet still
        # reading when this call was written to it: the kernel frees a
        # victim's memory, which lets C's call end, before it closes its files.
        a_killed = a_got.get("kept_mb") == 0 or (
            r.get("FunctionError") == "Unhandled" and a_got["errorType"].startswith("Runtime."))
        assert c_killed or a_killed, (c_got, a_got)
        assert node.proc.poll() is None
    finally:
        node.stop()


def test_tmp_is_private_to_each_environment(lam):
    a, b = deploy(lam), deploy(lam)
    code = make_zip({"app.py": "import os\ndef handler(e, c):\n    return sorted(os.listdir('/tmp'))\n"})
    for name in (a, b):
        lam.update_function_code(FunctionName=name, ZipFile=code)
    lam.update_function_code(FunctionName=a, ZipFile=make_zip({"app.py": PROBE}))
    call(lam, a, {"paths": []})  # writes /tmp/scratch in a's environment
    r = lam.invoke(FunctionName=b)
    assert json.loads(r["Payload"].read()) == []


def test_memory_limit_kills_the_runtime_and_it_is_replaced(lam):
    name = deploy(lam, Handler="app.hog", MemorySize=128)
    r, out = call(lam, name, {"mb": 400})
    assert r["FunctionError"] == "Unhandled" and out["errorType"] == "Runtime.OutOfMemory"
    assert out["errorMessage"].endswith("Runtime exited with error: signal: killed")
    log = base64.b64decode(r["LogResult"]).decode()
    assert "Error Type: Runtime.OutOfMemory" in log
    request = r["ResponseMetadata"]["RequestId"]
    assert f"RequestId: {request} Error: Runtime exited with error: signal: killed\nRuntime.ExitError\n" in log, log
    used = int(re.search(r"Max Memory Used: (\d+) MB", log)[1])
    assert 100 <= used <= 130, used
    r, out = call(lam, name, {"mb": 20})
    assert "FunctionError" not in r and out == 20 * 1024 * 1024


def max_memory_used(r):
    return int(re.search(r"Max Memory Used: (\d+) MB", base64.b64decode(r["LogResult"]).decode())[1])


def test_max_memory_used_counts_what_the_runtime_holds(lam):
    # A Python runtime forked from the zygote shares the zygote's pages, and
    # a Node runtime maps files another sandbox read first: resident in the
    # environment, charged to no cgroup of its own. Its cgroup alone read 2
    # and 8 MB for no-ops; the interpreters hold more than that.
    python = deploy(lam, Handler="app.hog", MemorySize=512)
    node = deploy(lam, Runtime="nodejs20.x", Handler="index.handler",
                  Code={"ZipFile": make_zip({"index.mjs": "export const handler = async () => 1;\n"})})
    lam.get_waiter("function_active_v2").wait(FunctionName=node)
    idle, _ = call(lam, python, {"mb": 0})
    busy, _ = call(lam, python, {"mb": 64})
    (quiet, _), (again, _) = call(lam, node, {}), call(lam, node, {})
    assert max_memory_used(idle) >= 8, max_memory_used(idle)
    # What it used on top, from its cgroup's peak.
    assert max_memory_used(busy) >= max_memory_used(idle) + 64, (max_memory_used(idle), max_memory_used(busy))
    # The environment's peak: it never falls, and a second no-op adds at most
    # a few MB (V8's heap grows as it compiles; once a run measured 43 → 44).
    quiet, again = max_memory_used(quiet), max_memory_used(again)
    assert 25 <= quiet <= again <= min(quiet + 4, 128), (quiet, again)


def env_dirs(server):
    group = server.cgroups()[0]
    return {d for d in group.iterdir() if d.is_dir()} if group.exists() else set()


def test_teardown_leaves_no_cgroup_or_slot_behind(lam, server):
    name = deploy(lam)
    _, out = call(lam, name, {"paths": []})
    lines = out["cgroup"].strip().splitlines()
    assert lines and all(line.endswith(":/") for line in lines), f"the function sees its cgroup as the root: {lines}"
    # Templates made ahead are here too; the function's environment is the one that goes.
    existing = env_dirs(server)
    roots = server.data_dir / "worker" / "roots"
    # A root is built in its sandbox's own mount namespace; the node keeps only the slots.
    assert all((roots / f"{d.name}.slots").is_dir() and not (roots / d.name).exists() for d in existing)
    lam.delete_function(FunctionName=name)
    gone = wait_for(lambda: {d for d in existing if not d.exists()}, "an environment's cgroup to be removed", timeout=5)
    (cg,) = gone
    wait_for(lambda: not (roots / f"{cg.name}.slots").exists(), "its slots to be removed", timeout=5)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"{cg.name}.slots" not in mounts, "no mount is left behind"


def test_small_functions_get_their_cpu_share_over_short_periods(lam, server):
    # AWS's share for 128 MB is 72/1000 of a CPU; the kernel's smallest
    # quota is 1 ms, so the period is 13.9 ms (not the default 100 ms), and
    # a quota left unused may be spent in the next period.
    name = deploy(lam, MemorySize=128)
    call(lam, name, {"paths": []})
    v1 = Path("/sys/fs/cgroup/cpu").is_dir()

    def limited(env):
        memory = env / ("memory.limit_in_bytes" if v1 else "memory.max")
        return memory.exists() and memory.read_text().strip() == str(128 << 20)
    env = next(d for d in env_dirs(server) if limited(d))
    if v1:
        cpu = Path("/sys/fs/cgroup/cpu") / env.parent.name / env.name
        got = [(cpu / f).read_text().strip() for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.cfs_burst_us")]
    else:
        got = env.joinpath("cpu.max").read_text().split() + [env.joinpath("cpu.max.burst").read_text().strip()]
    assert got == ["1000", "13889", "1000"]


def test_graceful_stop_retires_environments(private_server, tmp_path):
    s = private_server(tmp_path / "data")
    lam = s.client()
    call(lam, deploy(lam), {"paths": []})
    envs = env_dirs(s)
    assert len(envs) >= 2, "the function's environment and templates made ahead"
    assert s.kill(signal.SIGTERM) == 0
    assert not any(cg.exists() for cg in envs), "every environment's cgroup is gone"
    assert not s.cgroups()[0].exists(), "and the node's"
    assert str(s.data_dir) not in Path("/proc/self/mountinfo").read_text(), "no mount is left behind"
    assert not warnings_after_the_stop(s), "a clean stop warns of nothing (the templates it stops least of all)"
    # Stopped at once, while its first templates are still being made.
    fresh = private_server(tmp_path / "fresh")
    assert fresh.kill(signal.SIGTERM) == 0
    assert not warnings_after_the_stop(fresh)
    assert not mount_points_under(fresh.data_dir)
    assert not fresh.cgroups()[0].exists(), (list(fresh.cgroups()[0].iterdir()), fresh.output()[-2000:])


def warnings_after_the_stop(server):
    """The WARN lines a server logged from its stop on (a start may warn
    of the host's own things, such as a venv first on PATH)."""
    lines = server.output().splitlines()
    stop = next(i for i, l in enumerate(lines) if "shutting down" in l)
    return [l for l in lines[stop:] if " WARN " in l]


def mount_entries(path):
    """How many mounts stand at each mount point under `path`."""
    return Counter(p for _, p in mount_table() if p.startswith(f"{path}/"))


def mount_points_under(path):
    return set(mount_entries(path))


def assert_restart_cleared(left, now):
    """What a killed node left (`left`) is gone once its successor serves
    (`now`); the successor mounts the SDK slots and the tmpfs of the
    sandboxes' roots at the same paths again, once."""
    def again(p):
        return "/worker/sdk/" in p or p.endswith("/worker/roots")
    assert not {p for p in left if not again(p)} & set(now), "the restart unmounted what the killed node left"
    assert all(now[p] <= left[p] for p in now if again(p)), (left, now)
    assert all(now[p] == 1 for p in now if p.endswith("/worker/roots")), now


def test_a_restart_clears_what_a_killed_node_left(private_server, tmp_path):
    s = private_server(tmp_path / "data")
    lam = s.client()
    call(lam, deploy(lam), {"paths": []})
    envs = env_dirs(s)
    s.kill(unmount=False)  # SIGKILL: nothing is retired
    # Runtimes exit once their Runtime API connection (or, for templates, their control channel) is gone.
    wait_for(lambda: all(cg.exists() and not (cg / "cgroup.procs").read_text().strip() for cg in envs),
             "the orphaned runtimes to exit")
    left = mount_entries(s.data_dir)
    assert left, "a killed node leaves its mounts"
    private_server(tmp_path / "data")
    assert not any(cg.exists() for cg in envs)
    assert_restart_cleared(left, mount_entries(s.data_dir))


BUSY = """
import subprocess, sys

def handler(event, context):
    subprocess.run(["/usr/bin/sleep", event["marker"]])
"""


def test_a_killed_node_takes_its_busy_sandboxes_with_it(private_server, tmp_path):
    """SIGKILL gives the node no chance to retire anything: a handler in the
    middle of an invoke (which would never notice its Runtime API is gone)
    and the templates made ahead must die with it, not live on as orphans."""
    s = private_server(tmp_path / "data")
    lam = s.client()
    name = deploy(lam, Code={"ZipFile": make_zip({"app.py": BUSY})})
    marker = f"4321.{os.getpid()}{abs(hash(str(tmp_path))) % 10**6}"
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"marker": marker}))

    def sandbox_pids():
        return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and owned(p)}

    def owned(proc):
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return str(s.data_dir) in cmd or marker in cmd

    def alive(pid):
        try:
            return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
        except OSError:
            return False

    wait_for(lambda: any(marker in (Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"))
                         for p in sandbox_pids() if alive(p)), "the handler to start its child", timeout=60)
    pids = sandbox_pids()
    assert len(pids) >= 3, "the busy sandbox's stages, its handler's child and templates made ahead"
    s.kill()
    wait_for(lambda: not any(alive(p) for p in pids), "every sandbox of the killed node to die")


# A system call's outcome, as its errno's name ("allowed" when it succeeds).
ATTEMPT = '''
import ctypes, errno

libc = ctypes.CDLL(None, use_errno=True)

def attempt(fn, *args):
    if fn(*args) >= 0:
        return "allowed"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
'''

HOSTILE = ATTEMPT + '''
import os, signal, socket, time

def handler(event, context):
    out = {
        "mount": attempt(libc.mount, b"tmpfs", b"/tmp", b"tmpfs", 0, None),
        "unshare_user": attempt(libc.unshare, 0x10000000),
        "unshare_net": attempt(libc.unshare, 0x40000000),
        "ptrace": attempt(libc.ptrace, 0, 0, None, None),
        "setns": attempt(libc.setns, 0, 0),
        # io_uring_setup(1, params): a kernel surface of its own.
        "io_uring_setup": attempt(libc.syscall, 425, 1, ctypes.create_string_buffer(120)),
        # x32's getpid (39 with bit 30): the lists name x86-64's numbers only.
        "x32_getpid": attempt(libc.syscall, 0x40000000 + 39),
        # socket(AF_VSOCK, SOCK_STREAM): vsock is in no network namespace.
        "vsock": attempt(libc.socket, 40, 1, 0),
    }
    try:
        os.kill(event["server_pid"], signal.SIGKILL)
        out["kill_server"] = "sent"
    except OSError as e:
        out["kill_server"] = errno.errorcode.get(e.errno, str(e.errno))
    try:
        socket.create_connection(("127.0.0.1", event["port"]), timeout=2).close()
        out["connect"] = "connected"
    except OSError as e:
        out["connect"] = type(e).__name__
    try:
        with open("/tmp/fill", "wb") as f:
            chunk = b"x" * (1 << 20)
            for _ in range(event["fill_mb"]):
                f.write(chunk)
        out["fill"] = "fit"
    except OSError as e:
        out["fill"] = errno.errorcode.get(e.errno, str(e.errno))
    os.remove("/tmp/fill")
    pids = []
    try:
        for _ in range(3000):
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            pids.append(pid)
    except OSError as e:
        out["fork_error"] = errno.errorcode.get(e.errno, str(e.errno))
    out["forked"] = len(pids)
    for p in pids:
        os.kill(p, signal.SIGKILL)
    for p in pids:
        os.waitpid(p, 0)
    return out
'''


def test_hostile_function_is_contained_and_nimbus_keeps_serving(lam, server):
    name = unique_name("hostile")
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                        Code={"ZipFile": make_zip({"app.py": HOSTILE})}, MemorySize=1024, Timeout=60,
                        EphemeralStorage={"Size": 512})
    bystander = deploy(lam)
    r, out = call(lam, name, {"port": server.port, "fill_mb": 600, "server_pid": server.proc.pid})
    assert "FunctionError" not in r, out
    for syscall in ("mount", "unshare_user", "unshare_net", "ptrace", "setns", "io_uring_setup", "x32_getpid", "vsock"):
        assert out[syscall] == "EPERM", (syscall, out)
    assert out["kill_server"] == "ESRCH", "processes outside the sandbox cannot be seen or signalled"
    assert server.proc.poll() is None
    assert out["connect"] == "ConnectionRefusedError", "the host's ports are not reachable"
    assert out["fill"] == "ENOSPC", "/tmp is limited to EphemeralStorage"
    assert out["fork_error"] == "EAGAIN" and 900 < out["forked"] < 1024, out
    _, still = call(lam, bystander, {"paths": []})
    assert still["host"] == "nimbus", "other functions keep running"
    assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name


def test_code_is_byte_compiled_within_limits_and_a_compile_bomb_is_left_to_its_import(lam, server):
    """Nimbus byte-compiles Python code when it is deployed, so that no cold
    start compiles it. The sources are hostile: this 10 KB archive holds a
    module whose compile takes 6 GB and half a minute unbounded. The compiler
    runs as the sandboxes' user within a memory limit, so that module is left
    to its import (in the function's own sandbox, as on AWS) and the rest is
    compiled."""
    name = unique_name("bomb")
    code = make_zip({"app.py": "def handler(event, context):\n    return 'fine'\n",
                     "lib/__init__.py": "", "lib/util.py": "X = 1\n",
                     "big.py": "X = [" + ",".join(["a"] * 5_000_000) + "]\n"})
    assert len(code) < 20_000
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                        Code={"ZipFile": code})
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    assert json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read()) == "fine"
    sha = base64.b64decode(lam.get_function(FunctionName=name)["Configuration"]["CodeSha256"]).hex()
    unpacked = server.data_dir / "worker" / "code" / sha
    compiled = sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*.pyc"))
    assert compiled == ["__pycache__/app.cpython-311.pyc", "lib/__pycache__/__init__.cpython-311.pyc",
                        "lib/__pycache__/util.cpython-311.pyc"]
    assert not any(p.name.startswith(".") for p in unpacked.iterdir()), "the compiler's scratch is gone"


def test_compile_bombs_deployed_at_once_are_compiled_one_per_cpu(server, lam):
    """Each compiler may take 1 GiB and a CPU outside any sandbox, so no more
    of them run at once than the node has CPUs, however many are deployed.
    Only this node's compilers count (they run in its data directory): the
    suite's other workers run nodes of their own."""
    cpus = os.cpu_count()
    big = "X = [" + ",".join(["a"] * 5_000_000) + "]\n"
    names = [unique_name("bombs") for _ in range(cpus + 2)]
    # Code of its own each (the same code is unpacked and compiled once).
    bombs = {n: make_zip({"app.py": f"# {n}\ndef handler(event, context):\n    return 'fine'\n", "big.py": big})
             for n in names}
    seen, done = [], threading.Event()

    def watch():
        # Counts the compilers running, pass after pass, until told to stop.
        while not done.is_set():
            found = 0
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    found += (b".nimbus-bytecode" in Path(f"/proc/{pid}/cmdline").read_bytes()
                              and os.readlink(f"/proc/{pid}/cwd").startswith(str(server.data_dir) + "/"))
                except OSError:
                    pass  # gone meanwhile
            seen.append(found)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda n: lam.create_function(FunctionName=n, Runtime="python3.11", Handler="app.handler",
                                                        Role=ROLE, Code={"ZipFile": bombs[n]}), names))
        for n in names:
            lam.get_waiter("function_active_v2").wait(FunctionName=n, WaiterConfig={"Delay": 0.1})
    finally:
        done.set()
        watcher.join()
    assert 1 <= max(seen) <= cpus, Counter(seen)
    for n in names:
        assert json.loads(lam.invoke(FunctionName=n, Payload=b"{}")["Payload"].read()) == "fine"


FLOOD = '''
import os, stat, sys, time

def output(event, context):
    chunk = ("x" * 1023 + "\\n") * 1024
    for i in range(event["mb"]):
        sys.stdout.write(chunk)
        if event.get("pause_every") and (i + 1) % event["pause_every"] == 0:
            sys.stdout.flush()
            time.sleep(1.2)
    sys.stdout.flush()
    return "printed"

def blank(event, context):
    os.write(1, b"\\n" * event["lines"])
    return "printed"

def channel(event, context):
    # The runtime's channel to the node is a socket in this process.
    sockets = []
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                sockets.append(fd)
        except OSError:
            pass  # the directory listing's own descriptor, closed by now
    chunk = b"y" * (1 << 20)
    try:
        for _ in range(event["mb"]):
            for fd in sockets:
                os.write(fd, chunk)
    except OSError:
        pass
    return "wrote"
'''


def test_output_without_end_is_bounded_in_the_node(lam, server):
    """A function's output is held in the node (not its cgroup) until its
    invocation ends: past a bound the rest is dropped and a line says so.
    Writing its runtime's channel without end breaks the protocol, which
    fails the invocation rather than growing the node."""
    name = unique_name("flood")
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.output", Role=ROLE,
                        Code={"ZipFile": make_zip({"app.py": FLOOD})}, MemorySize=512, Timeout=60)
    before = server.peak_rss_mb()
    r, out = call(lam, name, {"mb": 300})
    assert out == "printed", out
    tail = base64.b64decode(r["LogResult"]).decode()
    assert re.search(r"\[Nimbus\] \d+ bytes of output were dropped", tail), tail
    # The same bound when the output comes over seconds, as the node stores
    # a running invocation's lines each second (it was counted a second at a time).
    r, out = call(lam, name, {"mb": 60, "pause_every": 10})
    tail = base64.b64decode(r["LogResult"]).decode()
    assert out == "printed" and re.search(r"\[Nimbus\] \d+ bytes of output were dropped", tail), tail[-300:]
    # An empty line costs its event, not its one byte: 400,000 of them
    # (400 KB) reach the bound too (they held 108 MB of the node).
    lam.update_function_configuration(FunctionName=name, Handler="app.blank")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    r, out = call(lam, name, {"lines": 400_000})
    tail = base64.b64decode(r["LogResult"]).decode()
    assert out == "printed" and re.search(r"\[Nimbus\] \d+ bytes of output were dropped", tail), tail
    lam.update_function_configuration(FunctionName=name, Handler="app.channel")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    r, out = call(lam, name, {"mb": 300})
    assert r.get("FunctionError") == "Unhandled" and "broke its channel's protocol" in out["errorMessage"], out
    # 600 MB written at the node; what it held (and so its peak) stays far below.
    assert server.peak_rss_mb() - before < 150
    lam.update_function_configuration(FunctionName=name, Handler="app.output")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    assert call(lam, name, {"mb": 1})[1] == "printed", "the function runs again in a new environment"


HOLD_CONNECTIONS = '''
import select, socket, time

def handler(event, context):
    """Opens connections to the node's forwarded API and asks on each; how many are answered while all are held."""
    held = []
    for _ in range(event["n"]):
        s = socket.create_connection(("127.0.0.1", 9070), timeout=5)
        s.sendall(b"GET /2015-03-31/functions HTTP/1.1\\r\\nHost: nimbus\\r\\n\\r\\n")
        held.append(s)
    answered, deadline = set(), time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s for s in held if s not in answered], [], [], 0.2)
        for s in ready:
            if s.recv(65536):
                answered.add(s)
        # All the node admits have answered: a further second for any more.
        if len(answered) >= event["admitted"]:
            deadline = min(deadline, time.monotonic() + 1)
    return len(answered)
'''


def test_a_function_holds_at_most_64_connections_to_the_node(lam):
    """Each listener the node serves an environment (its Runtime API, the
    forwarded API) takes at most 64 of its connections at once; the rest
    wait in the backlog. Otherwise a function could hold the node's
    descriptors, or its ports to its own API, without end."""
    name = unique_name("conns")
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                        Code={"ZipFile": make_zip({"app.py": HOLD_CONNECTIONS})}, Timeout=60)
    _, answered = call(lam, name, {"n": 100, "admitted": 64})
    assert answered == 64, answered


def test_layers_are_merged_in_order_at_opt(lam):
    first = lam.publish_layer_version(LayerName=unique_name("l1"), Content={"ZipFile": make_zip(
        {"python/shared.py": "WHO = 'first'\n", "python/only_first.py": "HERE = True\n"})})["LayerVersionArn"]
    second = lam.publish_layer_version(LayerName=unique_name("l2"), Content={"ZipFile": make_zip(
        {"python/shared.py": "WHO = 'second'\n"})})["LayerVersionArn"]
    code = "import shared, only_first\ndef handler(e, c):\n    return [shared.WHO, only_first.HERE, shared.__file__]\n"
    name = unique_name("layers")
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                        Code={"ZipFile": make_zip({"app.py": code})}, Layers=[first, second], Timeout=30)
    r = lam.invoke(FunctionName=name)
    assert json.loads(r["Payload"].read()) == ["second", True, "/opt/python/shared.py"]


SIGNED_CALL = '''
import datetime, hashlib, hmac, json, os, urllib.error, urllib.request

def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()

def get(path, signed):
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    host = endpoint.split("//", 1)[1]
    headers = {}
    if signed:
        now = datetime.datetime.utcnow()
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        token = os.environ["AWS_SESSION_TOKEN"]
        canonical_headers = f"host:{host}\\nx-amz-date:{amz_date}\\nx-amz-security-token:{token}\\n"
        signed_headers = "host;x-amz-date;x-amz-security-token"
        request = "\\n".join(["GET", path, "", canonical_headers, signed_headers, hashlib.sha256(b"").hexdigest()])
        scope = f"{day}/us-east-1/lambda/aws4_request"
        to_sign = "\\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(request.encode()).hexdigest()])
        key = sign(sign(sign(sign(("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode(), day), "us-east-1"), "lambda"), "aws4_request")
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers = {"x-amz-date": amz_date, "x-amz-security-token": token, "Authorization":
                   f"AWS4-HMAC-SHA256 Credential={os.environ['AWS_ACCESS_KEY_ID']}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint + path, headers=headers), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-amzn-ErrorType")

def handler(event, context):
    mine = f"/2015-03-31/functions/{context.function_name}/configuration"
    return {"endpoint": os.environ["AWS_ENDPOINT_URL"], "unsigned": get(mine, False), "signed": get(mine, True)}
'''


def test_the_nimbus_api_is_reachable_from_the_sandbox_with_session_keys(lam):
    name = unique_name("api")
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler", Role=ROLE,
                        Code={"ZipFile": make_zip({"app.py": SIGNED_CALL})}, Timeout=30)
    r = lam.invoke(FunctionName=name)
    out = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, out
    assert out["endpoint"] == "http://127.0.0.1:9070"
    assert out["unsigned"] == [403, "MissingAuthenticationTokenException"]
    status, body = out["signed"]
    assert status == 200 and body["FunctionName"] == name


def test_node_runs_in_the_sandbox(lam):
    name = unique_name("node-sb")
    code = ("import os from 'node:os';\n"
            "export const handler = async (event) => ({ uid: process.getuid(), pid: process.pid, "
            "host: os.hostname(), user: os.userInfo().username, event });\n")
    lam.create_function(FunctionName=name, Runtime="nodejs20.x", Handler="index.handler", Role=ROLE,
                        Code={"ZipFile": make_zip({"index.mjs": code})}, MemorySize=512, Timeout=30)
    r = lam.invoke(FunctionName=name, Payload=b'{"k": 1}')
    out = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, out
    assert out.pop("uid") in SANDBOX_UIDS
    assert out == {"pid": 1, "host": "nimbus", "user": "sbx_user1051", "event": {"k": 1}}


def test_provided_runtime_with_the_npm_aws_lambda_ric(lam):
    """AWS's Node runtime interface client (`aws-lambda-ric` from npm, with its native
    client built by scripts/test), unmodified, as the bootstrap of a sandboxed function."""
    import os
    package = Path(os.environ["NODE_MODULES_DIR"]) / "aws-lambda-ric"
    files = {f"node_modules/aws-lambda-ric/{p.relative_to(package)}": p.read_bytes()
             for part in ("bin", "dist", "package.json") for p in [package / part, *(package / part).rglob("*")]
             if p.is_file()}
    files["index.mjs"] = ("export const handler = async (event, context) => "
                          "({ ric: 'npm', event, id: context.awsRequestId, fn: context.functionName });\n")
    files["bootstrap"] = ("#!/bin/sh\ncd \"$LAMBDA_TASK_ROOT\"\n"
                          "exec node node_modules/aws-lambda-ric/bin/index.mjs \"$_HANDLER\"\n")
    name = unique_name("npm-ric")
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Handler="index.handler", Role=ROLE,
                        Code={"ZipFile": make_zip(files, executables={"bootstrap"})}, MemorySize=512, Timeout=30)
    for i in range(2):
        r = lam.invoke(FunctionName=name, Payload=json.dumps({"n": i}))
        out = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, out
        assert out == {"ric": "npm", "event": {"n": i}, "id": r["ResponseMetadata"]["RequestId"], "fn": name}
    r = lam.invoke(FunctionName=name, Payload=b'"not an object"')
    assert json.loads(r["Payload"].read())["event"] == "not an object"


NAMESPACES_APP = '''
import os
def handler(event, context):
    with open("/tmp/mine", "a") as f:
        f.write(context.function_name)
    return {"ns": {n: os.readlink(f"/proc/self/ns/{n}") for n in ("mnt", "net", "pid", "ipc", "uts", "cgroup")},
            "tmp": sorted(os.listdir("/tmp")), "mine": open("/tmp/mine").read(),
            "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
'''


def test_environments_from_templates_share_no_namespace(lam):
    """Every environment is made from a template started ahead; two of them
    (same runtime, same code) share no namespace with each other or the host,
    and neither sees the other's /tmp or processes."""
    zip_bytes = make_zip({"app.py": NAMESPACES_APP})
    names = [deploy(lam, Code={"ZipFile": zip_bytes}) for _ in range(2)]
    outs = [call(lam, n, {})[1] for n in names]
    host = {n: os.readlink(f"/proc/self/ns/{n}") for n in outs[0]["ns"]}
    for kind in host:
        values = {outs[0]["ns"][kind], outs[1]["ns"][kind], host[kind]}
        assert len(values) == 3, f"{kind} namespace shared: {values}"
    for name, out in zip(names, outs):
        assert out["tmp"] == ["mine"] and out["mine"] == name, "each /tmp holds only its own file"
        assert out["procs"] == [1, 3], "no other process is visible"


SYSCALLS = ATTEMPT + '''
print("SYSCALLS", attempt(libc.mount, b"tmpfs", b"/tmp", b"tmpfs", 0, None), attempt(libc.unshare, 0x10000000),
      attempt(libc.setns, 0, 0), attempt(libc.ptrace, 0, 0, None, None), attempt(libc.pivot_root, b"/", b"/tmp"),
      attempt(libc.umount2, b"/tmp", 0))
'''


def test_a_custom_runtime_runs_under_the_whole_seccomp_policy(lam):
    # A bootstrap executed by stage two, whose filters are the factory's
    # (the policy but what the stages call) and its own (the rest): the
    # calls the stages need are refused to the function as much as the rest.
    name = unique_name("syscalls")
    bootstrap = f"#!/bin/bash\n/usr/bin/python3.11 -I -S -c '{SYSCALLS}'\nexit 3\n"
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Handler="unused", Role=ROLE,
                        Code={"ZipFile": make_zip({"bootstrap": bootstrap}, executables={"bootstrap"})})
    wait_for(lambda: lam.get_function(FunctionName=name)["Configuration"]["State"] == "Active", "the function")
    r = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    log = base64.b64decode(r["LogResult"]).decode()
    assert r.get("FunctionError") == "Unhandled", log
    assert "SYSCALLS EPERM EPERM EPERM EPERM EPERM EPERM" in log, log


FDS_NODE = r'''
const fs = require("fs");
exports.handler = async (event) => {
  const links = fs.readdirSync("/proc/self/fd").map((n) => { try { return fs.readlinkSync("/proc/self/fd/" + n); } catch (e) { return e.code; } });
  let read = null;
  try { const b = Buffer.alloc(64); read = b.toString("utf8", 0, fs.readSync(event.fd, b)); } catch (e) { read = e.code; }
  return { links, read };
};
'''


def test_descriptors_the_node_was_started_with_reach_no_sandbox(tmp_path):
    """A wrapper script's or a supervisor's descriptor left open (here a
    root-only file) reached every sandbox but Python's under its number."""
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)
    s = Server(tmp_path / "data", pass_fds=[fd]).start()
    try:
        lam = s.client()
        name = unique_name("fds")
        lam.create_function(FunctionName=name, Runtime="nodejs20.x", Handler="index.handler", Role=ROLE,
                            Code={"ZipFile": make_zip({"index.js": FDS_NODE})})
        lam.get_waiter("function_active_v2").wait(FunctionName=name)
        out = json.loads(lam.invoke(FunctionName=name, Payload=json.dumps({"fd": fd}))["Payload"].read())
        # Its number may be one of the runtime's own by now; the file is nowhere.
        assert out["read"] != "root only" and not any(str(secret) in link for link in out["links"]), out
    finally:
        s.stop()
        os.close(fd)
