#!/usr/bin/env bash
# Installs what xapid needs to build and test on Debian 12 (run as root).
# Only Debian's packages are used; everything else the tests need they
# build themselves.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libmicrohttpd-dev libgnutls28-dev libjson-c-dev libssl-dev libsqlite3-dev
  libcurl4-openssl-dev libpq-dev
  postgresql  # the server the postgresql backend's tests run privately
  libcmocka-dev python3 python3-pytest
  clang cppcheck clang-format
  libclang-rt-dev llvm  # ASan/UBSan/libFuzzer runtimes, llvm-symbolizer
  nodejs npm ansible python3-os-xenapi
  # the Xen driver (libxl) and its nested-Xen test (tests/xen): Xen 4.17
  # and the dom0 kernel only land in /boot and /lib/modules here
  libxen-dev xen-hypervisor-4.17-amd64 xen-utils-4.17 linux-image-amd64
  busybox-static qemu-system-x86 cpio kmod
  qemu-utils nfs-common  # storage: qemu-img for ext/file SRs, mount.nfs
  openvswitch-switch  # ovsdb-server + ovs-vswitchd for the network tests
  # the kvm driver's tests: QEMU, and guests built at test time (tiny
  # multiboot kernels: gcc -m32; Linux: Debian's cloud kernel + busybox)
  qemu-system-x86 qemu-utils gcc-multilib cpio busybox-static
  linux-image-cloud-amd64
  # PIF.reconfigure_ip mode=DHCP: a DHCP client, and a DHCP server the
  # network tests run privately in a namespace
  isc-dhcp-client dnsmasq-base iproute2
  # the peer benchmark (tests/bench): libvirtd with its qemu driver
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  # npm may come with a nodejs build that conflicts with Debian's package
  if [ "$p" = npm ] && command -v npm >/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
    || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
