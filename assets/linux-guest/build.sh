#!/usr/bin/env bash
# Builds Vessel's default Linux guest without root, from Debian packages:
#   vmlinuz     the Debian kernel (bzImage; boots through the Linux 64-bit boot protocol)
#   initrd.gz   busybox-static, the virtio/input/DRM/CD modules later devices need, and an
#               /init that mounts the usual filesystems, loads them, prints the ready
#               marker and gives a shell on the serial console; and drmdraw, a small
#               KMS client (drmdraw.c) the GPU tests run.
# Output goes to ${VESSEL_CACHE:-~/.cache/vessel}/linux-guest and is reused when present
# (pass --force to rebuild). Prints the output folder on success.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# The cache is keyed by this recipe: a changed recipe builds a new image.
recipe="$(cat "$here/build.sh" "$here/init" "$here/drmdraw.c" | sha256sum | cut -c1-12)"
out="${VESSEL_CACHE:-$HOME/.cache/vessel}/linux-guest-$recipe"
if [[ "${1:-}" != "--force" && -s "$out/vmlinuz" && -s "$out/initrd.gz" ]]; then
    echo "$out"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# The kernel package the linux-image-amd64 metapackage currently points at.
kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [[ -z "$kpkg" ]]; then
    echo "build.sh: cannot find the Debian kernel package; run 'apt-get update' first" >&2
    exit 1
fi
apt-get download -q "$kpkg" busybox-static >/dev/null
mkdir pkg
for deb in ./*.deb; do dpkg -x "$deb" pkg; done
kver="$(ls pkg/lib/modules | head -n1)"

root="$work/initramfs"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,lib/modules/"$kver"}
cp pkg/bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"   # /init runs `busybox --install -s` for the rest

# Modules (and what they depend on) for the devices Vessel offers or will offer.
modules="virtio_pci virtio_blk virtio_net virtio_input virtio_gpu virtio_rng virtio_console evdev sr_mod isofs ata_piix crc32c_generic ext4"
depmod=/sbin/depmod; [[ -x $depmod ]] || depmod=/usr/sbin/depmod
modprobe=/sbin/modprobe; [[ -x $modprobe ]] || modprobe=/usr/sbin/modprobe
"$depmod" -b "$work/pkg" "$kver"
cp pkg/lib/modules/"$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/" 2>/dev/null || true
for m in $modules; do
    "$modprobe" -d "$work/pkg" -S "$kver" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r ko; do
    rel="${ko#"$work"/pkg/}"
    mkdir -p "$root/$(dirname "$rel")"
    cp "$ko" "$root/$rel"
done
"$depmod" -b "$root" "$kver"

install -m 0755 "$here/init" "$root/init"
# A small KMS client the GPU tests run in the guest (a display server's first steps).
gcc -static -O2 -Wall -I/usr/include/libdrm -o "$root/bin/drmdraw" "$here/drmdraw.c"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > initrd.gz

mkdir -p "$out"
cp pkg/boot/vmlinuz-"$kver" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv initrd.gz "$out/initrd.gz"
echo "$kpkg" > "$out/VERSION"
echo "$out"
