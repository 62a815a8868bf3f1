#!/bin/busybox sh
# /init of the test dom0: brings up the Xen toolstack's daemons as the
# recipe in /work/shared/recipes/xen-in-qemu does, then runs the scenarios
# (xentest.sh) and powers the machine off.  Results go to the serial
# console, which the pytest wrapper reads.
/bin/busybox --install -s /bin
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do
    modprobe $m || echo "XENTEST-INFO cannot load $m"
done
mount -t xenfs xenfs /proc/xen
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
hostname xen-dom0
xenstored --pid-file /var/run/xenstored.pid
xen-init-dom0
mkdir -p /var/log/xen/console
xenconsoled --log=guest --log-dir=/var/log/xen/console
echo "XENTEST-BEGIN $(cat /sys/hypervisor/type 2>/dev/null) $(cat /sys/hypervisor/version/major).$(cat /sys/hypervisor/version/minor)"
sh /xentest.sh
echo "XENTEST-END"
sync
poweroff -f
