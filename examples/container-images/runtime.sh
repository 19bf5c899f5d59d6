#!/bin/sh
# A Lambda runtime in 20 lines of shell (busybox's sh and wget): it speaks
# the Runtime API and answers each event with what it was started with, so
# that ENTRYPOINT, CMD, WORKDIR, the user and the file system can be
# checked from outside.
env_id=$(cat /proc/sys/kernel/random/uuid)
# When the sandbox began (PID 1's start, in clock ticks since boot): before
# the first event if the platform made it ahead.
started=$(cut -d' ' -f22 /proc/1/stat)
root=$(touch /probe 2>/dev/null && echo writable || echo read-only)
tmp=$(touch /tmp/probe 2>/dev/null && echo writable || echo read-only)
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation"
while true; do
    headers=/tmp/headers
    # A runtime that cannot reach the API exits, and the platform notices.
    event=$(wget -q -S -O - "$api/next" 2>"$headers") || exit 1
    id=$(sed -n 's/^ *Lambda-Runtime-Aws-Request-Id: *//ip' "$headers" | tr -d '\r')
    body=$(printf '{"args":"%s","cwd":"%s","uid":"%s","exec_env":"%s","greeting":"%s","env":"%s","root":"%s","tmp":"%s","started":"%s","event":%s}' \
        "$*" "$(pwd)" "$(id -u)" "$AWS_EXECUTION_ENV" "$GREETING" "$env_id" "$root" "$tmp" "$started" "$event")
    wget -q -O /dev/null --header 'Content-Type: application/json' --post-data "$body" "$api/$id/response"
done
