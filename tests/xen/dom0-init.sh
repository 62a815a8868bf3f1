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
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-blkback \
    xen-netback tun; do
    modprobe $m || echo "XENTEST-INFO cannot load $m"
done
mount -t xenfs xenfs /proc/xen
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
hostname xen-dom0
xenstored --pid-file /var/run/xenstored.pid
xen-init-dom0
mkdir -p /var/log/xen/console
xenconsoled --log=guest --log-dir=/var/log/xen/console
# Open vSwitch with the userspace datapath, for the guests' VIFs.
if [ -x /usr/sbin/ovs-vswitchd ]; then
    R=/var/run/openvswitch
    ovsdb-tool create /etc/openvswitch/conf.db \
        /usr/share/openvswitch/vswitch.ovsschema
    ovsdb-server /etc/openvswitch/conf.db --remote=punix:$R/db.sock \
        --pidfile=$R/ovsdb-server.pid --detach \
        --log-file=/var/log/ovsdb-server.log
    # The database's root row, which bridges hang from.
    ovs-vsctl --db=unix:$R/db.sock --no-wait init
    ovs-vswitchd unix:$R/db.sock --pidfile=$R/ovs-vswitchd.pid --detach \
        --log-file=/var/log/ovs-vswitchd.log
fi
echo "XENTEST-BEGIN $(cat /sys/hypervisor/type 2>/dev/null) $(cat /sys/hypervisor/version/major).$(cat /sys/hypervisor/version/minor)"
sh /xentest.sh
echo "XENTEST-END"
sync
poweroff -f
