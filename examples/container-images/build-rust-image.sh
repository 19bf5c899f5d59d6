#!/bin/sh
# Builds an image from scratch holding a Rust `lambda_runtime` binary (the
# repository's examples/rust-hello) and the shared libraries it links, as an
# OCI layout: build-rust-image.sh BINARY LAYOUT TAG
# A static binary needs no libraries: RUSTFLAGS="-C target-feature=+crt-static"
# cargo build --release -p rust-hello --target x86_64-unknown-linux-gnu
set -eu
bin=$1 layout=$2 tag=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -d "$layout" ] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle"
root=$work/bundle/rootfs
mkdir -p "$root/var/task"
cp "$bin" "$root/var/task/bootstrap"
# The dynamic loader and each library ldd names, at the same paths.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
umoci repack --image "$layout:$tag" "$work/bundle"
umoci config --image "$layout:$tag" --config.entrypoint /var/task/bootstrap --config.workingdir /var/task \
    --architecture amd64 --os linux
