#!/bin/sh
# Builds an image from scratch holding a static busybox and runtime.sh, as
# an OCI layout: build-busybox-image.sh LAYOUT TAG
# No daemon, no network: umoci makes the layout, the files come from the host.
set -eu
layout=$1 tag=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -d "$layout" ] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle"
root=$work/bundle/rootfs
mkdir -p "$root/bin" "$root/app"
cp /bin/busybox "$root/bin/busybox"
for applet in sh wget sed tr id pwd printf cat touch; do ln -s busybox "$root/bin/$applet"; done
cp "$here/runtime.sh" "$root/runtime.sh"
# Users and groups for a task definition's `user` to name.
mkdir -p "$root/etc"
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\napp:x:1000:\nstaff:x:50:\n' > "$root/etc/group"
umoci repack --image "$layout:$tag" "$work/bundle"
umoci config --image "$layout:$tag" --config.entrypoint /bin/sh --config.entrypoint /runtime.sh \
    --config.cmd default-cmd --config.workingdir /app --config.env PATH=/bin --config.env GREETING=from-image \
    --architecture amd64 --os linux
