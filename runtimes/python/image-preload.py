"""Nimbus: a Python image's runtime interface client, started ahead.

A template of an image whose entrypoint is `python… -m awslambdaric` runs
this (with `-c`) under the image's interpreter and `Env`, before any
function is known: it imports the client's modules, then waits on stdin
(the worker's socket) for the function's launch line, as stage two of a
bare sandbox would. If the launch is that same client under the same
interpreter and Python settings, it runs it here, as `-m` would, with the
function's environment; otherwise it executes what the launch names, so a
template never runs anything but what the function asks for.

The client's `bootstrap` module reads the log settings when imported, so
it is left for the function's run to import."""

import importlib
import json
import os
import runpy
import shutil
import sys
import time

for module in ("awslambdaric.lambda_runtime_client", "awslambdaric.lambda_runtime_marshaller",
               "awslambdaric.lambda_context", "awslambdaric.lambda_runtime_log_utils",
               "awslambdaric.lambda_config"):
    try:
        importlib.import_module(module)
    except Exception:  # another version of the client: it imports them itself
        pass

launch = json.loads(sys.stdin.buffer.readline())
# The function's code gets no channel to the worker.
devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(devnull, 0)
os.close(devnull)
env = dict(launch["env"])
program, args = launch["programs"][0], launch["args"]
cwd = launch.get("cwd") or "/"
python_settings = lambda e: {k: v for k, v in e.items() if k.startswith("PYTHON")}
found = shutil.which(program, path=env.get("PATH"))
same = (args[:2] == ["-m", "awslambdaric"] and found is not None
        and os.path.realpath(found) == os.path.realpath(sys.executable)
        and python_settings(env) == python_settings(os.environ))
os.chdir(cwd)
if not same:
    os.execvpe(program, [program] + args, env)
os.environ.clear()
os.environ.update(env)
time.tzset()
# As `-m` sets them: the module's arguments, and the working directory first on the path.
sys.argv = ["awslambdaric"] + args[2:]
sys.path[0] = os.getcwd()
runpy.run_module("awslambdaric", run_name="__main__", alter_sys=True)
