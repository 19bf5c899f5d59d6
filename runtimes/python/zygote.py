"""Nimbus's Python zygote: the runtime, imported once, that new environments
are forked from (SOCK's design) instead of each starting an interpreter.

The node starts it as root on the host, with a template's environment, its
socket on stdin, and nothing of any function. Its first message says what
every environment shares: the seccomp filters, in two
parts: the policy but `setns`, which the zygote installs on itself (it needs
only `setns` of what the policy denies), so that every child inherits it
compiled, and `setns` alone, which each environment adds. Then it
serves one request at a time, `fork <uid>` (the sandbox's own user, whose
group has the same number) with descriptors: the
namespaces of a sandbox the node has built (and holds paused), and the
environment's stdin socket and log pipe. For each it joins the sandbox's
namespaces, forks the sandbox's PID 2, which forks the environment and
exits, and returns to its own namespaces (see `spawn`); it answers on the
node's socket once the sandbox's PID 1 has adopted the environment. The
environment lets go of every descriptor
but its stdio, drops every capability and becomes its sandbox's user, sets
`no_new_privs`, adds its `setns` filter and its open-files limit,
re-seeds `random`, and goes on as a template started ahead would:
`bootstrap.main()` waits for its function on stdin.

What it must not do: run any function's code (its children start from a
process no function has touched, so none inherits another's memory or
descriptors), or read anything but the node's socket. It exits when that
socket closes (the node is gone)."""

import ctypes
import json
import os
import random
import resource
import socket
import struct
import sys
import traceback

# -I leaves the script's directory off the path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bootstrap  # noqa: E402 - after its directory is on the path

LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
OPEN_FILES = 1024
# Joined in this order: the mount namespace last, since it changes the
# root (to the sandbox's) that the others' paths were opened under.
NAMESPACES = ("net", "ipc", "uts", "cgroup", "pid", "mnt")


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def drop_privileges(uid, gid):
    """As stage two does: the bounding and ambient sets first (that needs
    CAP_SETPCAP, so before the uid change), then the identity, whose
    change empties the permitted and effective sets; `no_new_privs` keeps
    them gone."""
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        check(LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "dropping capabilities")
    check(LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)
    # The inheritable set too (capset's version 3 header, all sets zero).
    header = struct.pack("Ii", 0x20080522, 0)
    check(LIBC.syscall(126, header, bytes(24)), "clearing inheritable capabilities")  # capset
    # The identity change made the process undumpable, which hides its own
    # /proc/self files from it; an executed runtime is dumpable (and ptrace
    # is refused by seccomp either way).
    check(LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


class Programs:
    """Seccomp programs packed as the kernel reads them."""

    def __init__(self, programs):
        # The buffers must outlive the programs that point into them.
        self.buffers = [ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *insn) for insn in program))
                        for program in programs]
        self.programs = [SockFprog(len(program), ctypes.addressof(buf))
                         for program, buf in zip(programs, self.buffers)]

    def install(self):
        for program in self.programs:
            check(LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0), "seccomp")


class Setup:
    """What every environment shares, prepared once: the seccomp programs
    each adds to the zygote's."""

    def __init__(self, message):
        setup = json.loads(message)
        self.inherited = Programs(setup["zygote_seccomp"])
        self.own = Programs(setup["seccomp"])


def environment(setup, uid, stdin, log):
    """The environment's first steps, in the sandbox; returns to run as a template."""
    os.dup2(stdin, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    drop_privileges(uid, uid)
    setup.own.install()
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    # Forked children would otherwise draw the same sequence.
    random.seed()


# Python's own fork steps, called around glibc's `fork` (`os.fork` is the
# three together), so that the sandbox's PID 2 runs none of them: they are
# the first Python code a child runs, and every page a child writes is a
# copy-on-write fault (PID 2 wrote about 440 of the zygote's pages with
# them and its own `setns` calls, now under 100). PyDLL: called with the
# GIL held.
PY = ctypes.PyDLL(None, use_errno=True)
FORK, EXIT = PY.fork, PY._exit
BEFORE_FORK, AFTER_FORK_PARENT, AFTER_FORK_CHILD = PY.PyOS_BeforeFork, PY.PyOS_AfterFork_Parent, PY.PyOS_AfterFork_Child
# PID 2's exit status when it could not fork the environment.
FORK_FAILED = 125


def spawn(setup, uid, fds, own):
    """Joins the sandbox's namespaces (`own`: this process's, to return
    to), forks its PID 2, which forks the environment into them and exits
    (see `second`), and returns to its own namespaces; the answer for the
    node.

    A PID namespace moves only the children made after joining it. An
    orphan is adopted by its dead parent's namespace's init: the
    environment (PID 3) is the sandbox's PID 1's once PID 2 has exited,
    which the answer waits for. A zygote that cannot return to its own
    namespaces exits (the node starts another)."""
    namespaces, (stdin, log) = fds[:len(NAMESPACES)], fds[len(NAMESPACES):]
    joined = []
    try:
        for fd, name in zip(namespaces, NAMESPACES):
            check(LIBC.setns(fd, 0), f"joining the sandbox's {name} namespace")
            joined.append(name)
        BEFORE_FORK()
        try:
            pid = FORK()
            if pid == 0:
                second(setup, uid, stdin, log)
        finally:
            AFTER_FORK_PARENT()
        if pid < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fork: {os.strerror(err)}")
    finally:
        for name in reversed(joined):
            if LIBC.setns(own[name], 0) != 0:
                os.write(2, f"nimbus zygote: cannot return to its {name} namespace\n".encode())
                os._exit(1)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == 0:
        return b"{}"
    if code == FORK_FAILED:
        return json.dumps({"error": "the sandbox's PID 2 could not fork the environment"}).encode()
    return json.dumps({"error": f"the sandbox's PID 2 ended with {code}"}).encode()


def second(setup, uid, stdin, log):
    """PID 2 of the sandbox: forks the environment and exits, running no
    Python code of its own but these calls. Never returns in PID 2; the
    environment goes on as Python's fork would have left it."""
    try:
        child = FORK()
        if child != 0:
            EXIT(0 if child > 0 else FORK_FAILED)
        AFTER_FORK_CHILD()
        run(setup, uid, stdin, log)
    finally:
        os._exit(127)  # never the zygote's loop in a child


def exit_code(value):
    """The status an interpreter exits with for `sys.exit(value)`."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


def run(setup, uid, stdin, log):
    """The environment (PID 3): goes on as a template started ahead would,
    and ends as its interpreter would have. Never returns."""
    code = 127
    try:
        try:
            environment(setup, uid, stdin, log)
        except BaseException as e:  # noqa: BLE001 - said where the node reads the environment's output
            os.write(2, f"nimbus zygote: {e}\n".encode())
            return
        code = 1
        try:
            bootstrap.main()
            code = 0
        except SystemExit as e:  # a handler's sys.exit(n): the runtime exits with n
            code = exit_code(e.code)
        except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught exception
            traceback.print_exc()
    finally:
        os._exit(code)


def serve():
    node = socket.socket(fileno=0)
    setup = Setup(node.recv(1 << 20))
    own = {name: os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in NAMESPACES}
    # As root, without `no_new_privs`: it stays root to join sandboxes.
    setup.inherited.install()
    while True:
        # `fork` and its descriptors; nothing at all once the node is gone.
        msg, fds, _, _ = socket.recv_fds(node, 64, len(NAMESPACES) + 2)
        if not msg:
            return
        try:
            # `fork <uid>`: the sandbox's own user (and group of that number).
            uid = int(msg.split()[1])
            if uid <= 0:
                raise OSError(f"refusing to fork an environment as uid {uid}")
            answer = spawn(setup, uid, fds, own)
        except (OSError, ValueError, IndexError) as e:
            answer = json.dumps({"error": str(e)}).encode()
        for fd in fds:
            os.close(fd)
        node.sendall(answer)


if __name__ == "__main__":
    serve()
