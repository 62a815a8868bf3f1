#!/bin/busybox sh
# /init of the test guest (a PV domain xapid builds inside nested Xen):
# prints one marker per boot, naming the boot (the kernel's random
# boot_id), then a numbered tick every second, so the test can tell from
# the console log alone whether the guest runs, is paused (no ticks), was
# rebooted (a marker with a new boot id) or resumed (same boot id, ticks
# going on from where they stopped).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# The kernel runs /sbin/poweroff when the toolstack asks the guest to
# power off (drivers/xen/manage.c); busybox's would signal init, which a
# shell script does not understand.
mkdir -p /sbin
printf '#!/bin/sh\nexec /bin/busybox poweroff -f\n' > /sbin/poweroff
chmod +x /sbin/poweroff
echo "GUEST-MARKER-UP kernel=$(uname -r) hypervisor=$(cat /sys/hypervisor/type) boot=$(cat /proc/sys/kernel/random/boot_id)"
i=0
while :; do
    i=$((i + 1))
    echo "GUEST-TICK $i"
    sleep 1
done
