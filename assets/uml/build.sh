#!/usr/bin/env bash
# Builds a User-Mode Linux kernel from Debian's linux-source-6.1 with virtio over
# vhost-user (VIRTIO_UML), virtio-input, evdev and virtio-gpu: the way to put Vessel's
# virtio-input and virtio-gpu under Linux's real drivers on a machine whose KVM cannot
# boot Linux, where QEMU's vhost-user-input needs KVM and QEMU 7.2 has no vhost-user GPU
# frontend for TCG (DESIGN.md §3). It boots the default Linux guest's initramfs.
# Output: ${VESSEL_CACHE:-~/.cache/vessel}/uml-<recipe>/linux, reused when present (pass
# --force to rebuild). Prints the kernel's path on success. About 4 minutes on 2 cores.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
recipe="$(cat "$here/build.sh" "$here/xstate.patch" | sha256sum | cut -c1-12)"
out="${VESSEL_CACHE:-$HOME/.cache/vessel}/uml-$recipe"
if [[ "${1:-}" != "--force" && -x "$out/linux" ]]; then
    echo "$out/linux"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download -q linux-source-6.1 >/dev/null 2>&1; then
    echo "uml/build.sh: cannot download linux-source-6.1; run 'apt-get update' first" >&2
    exit 1
fi
dpkg -x linux-source-6.1_*.deb pkg
tar -xaf pkg/usr/src/linux-source-6.1.tar.xz
cd linux-source-6.1
patch -p1 --quiet < "$here/xstate.patch"
make -s ARCH=um defconfig
# virtio-gpu needs DMA, which UML has with its PCI emulation. No fbdev emulation: its
# console needs VT, which UML lacks; the guest drives DRM directly (drmdraw).
./scripts/config -e VIRTIO_UML -e VIRTIO_INPUT -e INPUT_EVDEV -e BLK_DEV_INITRD \
    -e RD_GZIP -e DEVTMPFS --set-val KERNEL_STACK_ORDER 3 \
    -e UML_PCI_OVER_VIRTIO --set-val UML_PCI_OVER_VIRTIO_DEVICE_ID 1234 \
    -e DRM -e DRM_VIRTIO_GPU -d DRM_FBDEV_EMULATION
make -s ARCH=um olddefconfig
make -s ARCH=um -j"$(nproc)" linux >/dev/null 2>&1 || {
    # Again with the output, so a failure says why.
    make ARCH=um linux >&2
    exit 1
}
mkdir -p "$out"
cp linux "$out/linux.tmp" && mv "$out/linux.tmp" "$out/linux"
# Kernels of older recipes (70 MB each) go.
find "$(dirname "$out")" -maxdepth 1 -name 'uml-*' ! -name "$(basename "$out")" -exec rm -rf {} +
echo "$out/linux"
