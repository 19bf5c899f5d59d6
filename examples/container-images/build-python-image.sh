#!/bin/sh
# Builds a Python image that runs AWS's runtime interface client
# (awslambdaric), as an OCI layout: build-python-image.sh LAYOUT TAG APP_DIR
# Debian's packages make the root (mmdebstrap, about 100 s); PyPI's wheel of
# awslambdaric is installed into it with the host's pip; APP_DIR's files go
# to /var/task. ENTRYPOINT python3 -m awslambdaric, CMD app.handler.
set -eu
layout=$1 tag=$2 app=$3
pip=${PIP:-pip3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -d "$layout" ] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle"
root=$work/bundle/rootfs
mmdebstrap --quiet --variant=essential --include=python3,libstdc++6 bookworm "$root" http://deb.debian.org/debian
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
py=$(chroot "$root" python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
"$pip" download --quiet --only-binary=:all: --platform manylinux2014_x86_64 --python-version "$py" \
    --implementation cp --dest "$work/wheels" awslambdaric
"$pip" install --quiet --no-index --find-links "$work/wheels" --no-compile \
    --target "$root/usr/local/lib/python3/dist-packages" awslambdaric
mkdir -p "$root/var/task"
cp -r "$app"/. "$root/var/task/"
# Byte-compiled by the image's own interpreter: the root is read-only where
# it runs, so whatever is not compiled here is compiled at every cold start.
chroot "$root" python3 -m compileall -q /usr/local/lib/python3/dist-packages /var/task
umoci repack --image "$layout:$tag" "$work/bundle"
umoci config --image "$layout:$tag" --config.entrypoint python3 --config.entrypoint -m \
    --config.entrypoint awslambdaric --config.cmd app.handler --config.workingdir /var/task \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin --config.env PYTHONPATH=/usr/local/lib/python3/dist-packages \
    --architecture amd64 --os linux
