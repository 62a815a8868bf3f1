#!/usr/bin/env bash
# build-dom0.sh BUILD_DIR OUT - the pieces of the nested-Xen test machine.
#
# Writes into OUT:
#   xen        the hypervisor (Debian's xen-hypervisor-4.17-amd64, gunzipped:
#              QEMU's -kernel loads a multiboot ELF, not a gzip)
#   vmlinuz    dom0's kernel (the one linux-image-amd64 depends on)
#   dom0.gz    dom0's initramfs: busybox, the Xen modules, xenstored,
#              xenconsoled, xen-init-dom0, libxl-save-helper, xl, the
#              xenstore tools, xapid and xe from BUILD_DIR with every
#              shared library they load, the test's client xr (xr.c),
#              the driver-level localhost migration xenmig (xenmig.c),
#              the scenarios (xentest.sh) and the test guest (the same
#              kernel with a busybox initramfs and blkfront/netfront)
#              under /guest; for the guest's devices, blkback, netback,
#              loop, nbd and tun, qemu-nbd, xapid's hotplug scripts
#              (hypervisor/xen/scripts) and Open vSwitch (ovsdb-server,
#              ovs-vswitchd with the userspace datapath) when installed.
# Everything comes from the installed Debian packages (scripts/deps.sh);
# nothing is downloaded.  Exits 77 naming what is missing.
set -euo pipefail
BUILD=$(readlink -f "$1")
OUT=$(readlink -f "$2")
HERE=$(dirname "$(readlink -f "$0")")
XENBIN=/usr/lib/xen-4.17/bin

missing=()
need() { [ -e "$1" ] || missing+=("$2 ($1)"); }
KPKG=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null |
    grep -o 'linux-image-[0-9][^ ,]*' | head -n 1 || true)
KVER=${KPKG#linux-image-}
[ -n "$KPKG" ] || missing+=("linux-image-amd64")
need /boot/xen-4.17-amd64.gz xen-hypervisor-4.17-amd64
need $XENBIN/xenstored xen-utils-4.17
need /usr/bin/xenstore-list xenstore-utils
need /bin/busybox busybox-static
need /usr/bin/cpio cpio
need /sbin/depmod kmod
need /usr/lib/x86_64-linux-gnu/libc.a libc6-dev
need /usr/bin/qemu-img qemu-utils
need /usr/bin/qemu-nbd qemu-utils
command -v qemu-system-x86_64 >/dev/null || missing+=("qemu-system-x86")
if [ -n "$KPKG" ]; then
    need "/boot/vmlinuz-$KVER" "$KPKG"
    need "/lib/modules/$KVER/kernel/drivers/xen" "$KPKG"
fi
need "$BUILD/bin/xapid" "xapid (build it first)"
need "$BUILD/bin/xe" "xe (build it first)"
need "$BUILD/libxacore.a" "the core library (build it first)"
# (Not "ldd | grep -q": under pipefail, grep quitting early can fail ldd
# with SIGPIPE.)
if ((${#missing[@]} == 0)) && [[ "$(ldd "$BUILD/bin/xapid")" != *libxenlight* ]]; then
    missing+=("libxen-dev (xapid was built without the xen driver)")
fi
if ((${#missing[@]})); then
    echo "MISSING: ${missing[*]}"
    exit 77
fi

mkdir -p "$OUT"
gunzip -c /boot/xen-4.17-amd64.gz >"$OUT/xen"
cp "/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

# the guest
G=$OUT/guest-root
rm -rf "$G" && mkdir -p "$G/bin" "$G/proc" "$G/sys" "$G/dev"
cp /bin/busybox "$G/bin/"
cp "$HERE/guest-init.sh" "$G/init" && chmod +x "$G/init"
KMOD=/lib/modules/$KVER/kernel
mkdir -p "$G/lib/modules"
cp "$KMOD/drivers/block/xen-blkfront.ko" "$KMOD/drivers/net/xen-netfront.ko" \
    "$G/lib/modules/"

# dom0
D=$OUT/dom0-root
rm -rf "$D"
mkdir -p "$D"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,guest,etc/xen} \
    "$D"/{var/lib/xen,var/run/xen,var/log/xen,var/lib/xapid,run} \
    "$D"/{lib64,lib/x86_64-linux-gnu,usr/lib/x86_64-linux-gnu} "$D$XENBIN"
cp /bin/busybox "$D/bin/"
touch "$D/etc/xen/xl.conf"
echo "root:x:0:0:root:/root:/bin/sh" >"$D/etc/passwd"
echo "root:x:0:" >"$D/etc/group"
printf '127.0.0.1 localhost xen-dom0\n' >"$D/etc/hosts"
mkdir -p "$D/lib/modules/$KVER/kernel/drivers"
cp -r "/lib/modules/$KVER/kernel/drivers/xen" "$D/lib/modules/$KVER/kernel/drivers/"
# The guests' devices: disks through blkback on loop or nbd devices,
# VIFs through netback; tun for Open vSwitch's userspace bridge ports.
for m in drivers/block/xen-blkback/xen-blkback.ko drivers/net/xen-netback/xen-netback.ko \
    drivers/block/loop.ko drivers/block/nbd.ko drivers/net/tun.ko; do
    mkdir -p "$(dirname "$D/lib/modules/$KVER/kernel/$m")"
    cp "$KMOD/$m" "$D/lib/modules/$KVER/kernel/$m"
done
cp /lib/modules/"$KVER"/modules.{order,builtin} "$D/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$D" "$KVER"
for b in xenstored xenconsoled xen-init-dom0 libxl-save-helper xl; do
    cp $XENBIN/$b "$D$XENBIN/"
done
cp /usr/bin/xenstore "$D/usr/bin/"
# xapid's hotplug scripts, where the driver looks for them.
mkdir -p "$D/usr/libexec/xapid/xen"
cp "$HERE/../../hypervisor/xen/scripts/block" "$HERE/../../hypervisor/xen/scripts/vif" \
    "$D/usr/libexec/xapid/xen/"
# Open vSwitch for the VIFs' bridge (optional: without it xapid runs with
# --network sim and the VIF checks say so).
OVS=()
if [ -x /usr/sbin/ovs-vswitchd ] && [ -x /usr/sbin/ovsdb-server ] &&
    [ -f /usr/share/openvswitch/vswitch.ovsschema ]; then
    mkdir -p "$D/usr/share/openvswitch" "$D/var/run/openvswitch" "$D/etc/openvswitch"
    cp /usr/share/openvswitch/vswitch.ovsschema "$D/usr/share/openvswitch/"
    for b in /usr/sbin/ovsdb-server /usr/sbin/ovs-vswitchd /usr/bin/ovsdb-tool \
        /usr/bin/ovs-vsctl; do
        cp -L "$b" "$D$b"
        OVS+=("$D$b")
    done
fi
for t in list read ls write rm exists; do
    ln -sf xenstore "$D/usr/bin/xenstore-$t"
done
cp "$BUILD/bin/xapid" "$BUILD/bin/xe" "$D/usr/bin/"
# The local SR keeps its images as qcow2 made by qemu-img (suspend images
# included), so dom0 needs it as xapi's dom0 has its storage tools.
cp /usr/bin/qemu-img /usr/bin/qemu-nbd "$D/usr/bin/"
# The test's own client, static: see xr.c for why.
${CC:-cc} -std=gnu11 -O2 -static -Wall -Wextra -Werror -Wshadow \
    -Wstrict-prototypes -Wmissing-prototypes -o "$D/usr/bin/xr" "$HERE/xr.c"
# The driver-level localhost migration (xenmig.c), linked against the
# core library of BUILD (the xen driver and what it calls).
SRC=$HERE/../..
XLIBS=$(pkg-config --libs libmicrohttpd json-c sqlite3 libpq openssl libcurl \
    gnutls xenlight xenstore xentoollog)
# shellcheck disable=SC2086 # XLIBS is a list of flags
${CC:-cc} -std=gnu11 -O2 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
    -Wmissing-prototypes -D_GNU_SOURCE -I"$SRC" -I"$SRC/server" \
    -I"$SRC/server/core" -I"$SRC/clients/c" -I"$BUILD/gen" \
    -o "$D/usr/bin/xenmig" "$HERE/xenmig.c" "$BUILD/libxacore.a" $XLIBS -lpthread -lm
# Every shared library, where the dynamic loader looks for it.
for f in "$D$XENBIN"/* "$D/usr/bin/xenstore" "$D/usr/bin/xapid" "$D/usr/bin/xe" \
    "$D/usr/bin/xenmig" \
    "$D/usr/bin/qemu-img" "$D/usr/bin/qemu-nbd" ${OVS[@]+"${OVS[@]}"}; do
    ldd "$f" | awk '/=>/ && $3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
    cp -L "$lib" "$D/lib/x86_64-linux-gnu/"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$D/lib64/"
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$D/lib/x86_64-linux-gnu/"
cp "$HERE/dom0-init.sh" "$D/init" && chmod +x "$D/init"
cp "$HERE/xentest.sh" "$D/xentest.sh"
cp "/boot/vmlinuz-$KVER" "$D/guest/vmlinuz"
(cd "$G" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$D/guest/initrd.gz"
(cd "$D" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$OUT/dom0.gz"
echo "built $OUT/xen, $OUT/vmlinuz ($KVER), $OUT/dom0.gz ($(du -h "$OUT/dom0.gz" | cut -f1))"
