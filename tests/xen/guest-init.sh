#!/bin/busybox sh
# /init of the test guest (a PV domain xapid builds inside nested Xen):
# prints one marker per boot, naming the boot (the kernel's random
# boot_id), then a numbered tick every second, so the test can tell from
# the console log alone whether the guest runs, is paused (no ticks), was
# rebooted (a marker with a new boot id) or resumed (same boot id, ticks
# going on from where they stopped).
#
# With a disk (/dev/xvda, blkfront), it prints the disk's first line
# (GUEST-DISK read=[...]) and writes a new one counting its boots, so the
# test sees the disk persist across reboots and can read it from dom0.
# With xentest.ip=ADDR/LEN and xentest.peer=ADDR on its command line
# (a VIF, netfront), it configures eth0, pings the peer (GUEST-PING) and
# then waits for one word on TCP port 7777: "reboot", "poweroff" or
# "crash", which it does by itself (a guest-initiated power change).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The kernel runs /sbin/poweroff when the toolstack asks the guest to
# power off (drivers/xen/manage.c); busybox's would signal init, which a
# shell script does not understand.
mkdir -p /sbin
printf '#!/bin/sh\nexec /bin/busybox poweroff -f\n' > /sbin/poweroff
chmod +x /sbin/poweroff
boot=$(cat /proc/sys/kernel/random/boot_id)
echo "GUEST-MARKER-UP kernel=$(uname -r) hypervisor=$(cat /sys/hypervisor/type) boot=$boot"

arg() { # the value of xentest.NAME on the command line
    for w in $(cat /proc/cmdline); do
        case $w in xentest.$1=*) echo "${w#*=}" ;; esac
    done
}

for m in /lib/modules/*.ko; do
    [ -f "$m" ] && insmod "$m" 2>/dev/null
done

if [ -n "$(arg disk)" ]; then
    i=0
    while [ ! -b /dev/xvda ] && [ $i -lt 40 ]; do
        sleep 0.5
        i=$((i + 1))
    done
    if [ -b /dev/xvda ]; then
        prev=$(head -c 512 /dev/xvda | head -n 1 | tr -cd 'A-Za-z0-9=_ .:-')
        n=0
        case $prev in XENTEST-DISK\ boots=*)
            n=${prev#XENTEST-DISK boots=}
            n=${n%% *}
            ;;
        esac
        n=$((n + 1))
        echo "GUEST-DISK read=[$prev]"
        printf 'XENTEST-DISK boots=%d boot=%s\n' $n "$boot" |
            dd of=/dev/xvda conv=fsync 2>/dev/null
        echo "GUEST-DISK wrote boots=$n"
    else
        echo "GUEST-DISK none"
    fi
fi

ip=$(arg ip)
peer=$(arg peer)
if [ -n "$ip" ]; then
    ip link set lo up
    ip link set eth0 up && ip addr add "$ip" dev eth0
    # One word from dom0 over TCP, then the guest acts on it by itself;
    # listening before the ping below, so that dom0, which waits for the
    # ping's report, never finds the port closed.
    mkdir -p /tmp
    (
        sleep 100000 | nc -l -p 7777 >/tmp/word &
        while ! grep -q '[a-z]' /tmp/word 2>/dev/null; do
            sleep 0.5
        done
        w=$(tr -cd 'a-z' </tmp/word)
        echo "GUEST-ACT $w"
        case $w in
        reboot) reboot -f ;;
        poweroff) poweroff -f ;;
        crash) echo c >/proc/sysrq-trigger ;;
        esac
    ) &
    i=0
    ok=failed
    while [ $i -lt 90 ]; do
        if ping -c 1 -W 2 "$peer" >/dev/null 2>&1; then
            ok=ok
            break
        fi
        i=$((i + 1))
    done
    echo "GUEST-PING $peer $ok"
fi

i=0
while :; do
    i=$((i + 1))
    echo "GUEST-TICK $i"
    sleep 1
done
