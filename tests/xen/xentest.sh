#!/bin/sh
# xentest.sh - the VM lifecycle scenarios of tests/e2e/test_vm_lifecycle.py,
# run inside the test dom0 against xapid --hypervisor xen.  Calls go
# through xr (xr.c: every exec of xe costs seconds in this nested dom0);
# xe makes the VM, as a user would.
#
# Prints one line per scenario on the serial console:
#   XENTEST <name> PASS|FAIL [detail]
#   XENTEST-TIME <what> <seconds>
# The guest (guest-init.sh) prints GUEST-MARKER-UP once per boot and
# GUEST-TICK <n> every second; its console log, which xenconsoled writes,
# is the evidence of what really happened to the domain.

PW=xentest-password
XE="xe -s 127.0.0.1 -p 80 --nossl -u root -pw $PW"
S=""
CONSOLE_DIR=/var/log/xen/console
STATE=/var/lib/xapid
MIB=1048576
GUEST_MEM=$((128 * MIB))
fails=0

result() {
    if [ "$2" = PASS ]; then
        echo "XENTEST $1 PASS${3:+ $3}"
    else
        echo "XENTEST $1 FAIL${3:+ $3}"
        fails=$((fails + 1))
    fi
}

check() { # name condition-command...: PASS when the command succeeds
    local name=$1
    shift
    if "$@"; then result "$name" PASS; else result "$name" FAIL "$*"; fi
}

# Seconds since boot, read without starting a process (each one costs).
now() {
    read -r up _ </proc/uptime
    echo "$up"
}
elapsed() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }

# wait_for SECONDS COMMAND...: polls every 0.5 s until COMMAND succeeds.
wait_for() {
    local tries=$(($1 * 2))
    shift
    while ! "$@"; do
        tries=$((tries - 1))
        [ $tries -gt 0 ] || return 1
        sleep 0.5
    done
    return 0
}

call() { # METHOD ARG...: the call with this test's session
    local method=$1
    shift
    xr "$method" "$S" "$@" 2>&1
}
login() { S=$(xr login root $PW); }

start_xapid() {
    xapid --state-dir $STATE --bind 127.0.0.1 --http-port 80 --https-port 0 \
        --hypervisor xen --root-password-file /etc/xapid-password \
        --threads 4 \
        >>/var/log/xapid.log 2>&1 &
    XAPID_PID=$!
    wait_for 60 login
}

stop_xapid() {
    kill -TERM $XAPID_PID
    wait $XAPID_PID
}

power() { call VM.get_power_state "${1:-$VM}"; }
domid() { call VM.get_domid "$VM"; }
is_power() { [ "$(power "$2")" = "$1" ]; }

log_of() { echo "$CONSOLE_DIR/guest-$1.log"; }
# The boot id of the guest's latest boot ("" before its first).
boot_id() {
    grep -a GUEST-MARKER-UP "$(log_of "$1")" 2>/dev/null | tail -n 1 |
        sed -n 's/.*boot=\([-0-9a-f]*\).*/\1/p'
}
last_tick() {
    grep -a GUEST-TICK "$(log_of "$1")" 2>/dev/null | tail -n 1 |
        tr -dc '0-9'
}
# Whether the guest has booted since its boot id was 'previous'.  (Counting
# markers would not do: xenconsoled may start a new log for a new domain.)
booted_since() {
    local b
    b=$(boot_id "$1")
    [ -n "$b" ] && [ "$b" != "$2" ]
}
ticks_beyond() {
    local t
    t=$(last_tick "$1")
    [ -n "$t" ] && [ "$t" -gt "$2" ]
}
# Only dom0 is left in xenstore: no domain, no half-built remains.
only_dom0() { [ "$(xenstore-list /local/domain | tr '\n' ' ')" = "0 " ]; }
domain_name_is() { [ "$(xenstore-read /local/domain/$1/name 2>/dev/null)" = "$2" ]; }

new_vm() { # name kernel -> uuid
    $XE vm-create name-label="$1" user-version=1 is-a-template=false \
        affinity=OpaqueRef:NULL memory-static-max=$GUEST_MEM \
        memory-dynamic-max=$GUEST_MEM memory-dynamic-min=$GUEST_MEM \
        memory-static-min=$GUEST_MEM VCPUs-max=1 VCPUs-at-startup=1 \
        actions-after-shutdown=destroy actions-after-reboot=restart \
        actions-after-crash=destroy PV-bootloader= PV-kernel="$2" \
        PV-ramdisk=/guest/initrd.gz PV-args="console=hvc0 quiet" \
        PV-bootloader-args= PV-legacy-args= HVM-boot-policy= PCI-bus= \
        recommendations=
}

dump_logs() {
    echo "XENTEST-INFO xapid log (last 60 lines):"
    tail -n 60 /var/log/xapid.log | sed 's/^/XAPID-LOG: /'
    for f in "$CONSOLE_DIR"/guest-*.log; do
        [ -f "$f" ] || continue
        echo "XENTEST-INFO console $f (last 15 lines):"
        tail -n 15 "$f" | sed 's/^/GUEST-LOG: /'
    done
}

# --- the server --------------------------------------------------------------
echo $PW >/etc/xapid-password
t0=$(now)
if start_xapid; then
    result xapid_start PASS "$(elapsed "$t0" "$(now)")s"
else
    result xapid_start FAIL
    dump_logs
    exit 1
fi

# Host figures come from Xen (libxl_get_physinfo), not from dom0's /proc:
# dom0 has 768 MiB, the machine 1.5 GiB.
HM=$(call host.get_metrics "$(call host.get_all)")
total=$(call host_metrics.get_memory_total "$HM")
echo "XENTEST-INFO host memory_total=$total memory_free=$(call host_metrics.get_memory_free "$HM")"
check host_memory_from_xen [ "${total:-0}" -gt $((1100 * MIB)) ]

# --- the VM ------------------------------------------------------------------
U=$(new_vm guest /guest/vmlinuz)
VM=$(call VM.get_by_uuid "$U")
check vm_create [ -n "$U" -a "${VM#OpaqueRef:}" != "$VM" ]

# --- bad input: a kernel that does not exist ---------------------------------
BAD=$(call VM.clone "$VM" bad-kernel)
call VM.set_PV_kernel "$BAD" /guest/no-such-kernel >/dev/null
out=$(call VM.start "$BAD" false false)
rc=$?
echo "XENTEST-INFO bad kernel: $out"
check bad_kernel_refused [ $rc -ne 0 ]
check bad_kernel_stays_halted is_power Halted "$BAD"
check bad_kernel_leaves_nothing_in_xenstore only_dom0
check bad_kernel_libxl_message_logged grep -q "libxl error" /var/log/xapid.log
call VM.destroy "$BAD" >/dev/null

# --- start -------------------------------------------------------------------
t0=$(now)
call VM.start "$VM" false false
t1=$(now)
if wait_for 180 booted_since "$U" ""; then
    t2=$(now)
    result start PASS
    echo "XENTEST-TIME vm_start_call $(elapsed "$t0" "$t1")"
    echo "XENTEST-TIME start_to_marker $(elapsed "$t0" "$t2")"
    grep -a GUEST-MARKER-UP "$(log_of "$U")" | head -n 1 |
        sed 's/^/XENTEST-INFO /'
else
    result start FAIL "no marker in $(log_of "$U")"
fi
check start_running is_power Running
D=$(domid)
check start_domain_named_by_uuid domain_name_is "$D" "$U"
check start_guest_ticks wait_for 30 ticks_beyond "$U" 1

# --- pause / unpause -----------------------------------------------------------
call VM.pause "$VM"
check pause_state is_power Paused
sleep 2
a=$(last_tick "$U")
sleep 4
b=$(last_tick "$U")
check pause_stops_guest [ "$a" = "$b" ]
call VM.unpause "$VM"
check unpause_state is_power Running
check unpause_guest_runs wait_for 30 ticks_beyond "$U" "${b:-0}"

# --- clean reboot: the guest reboots itself on the PV control node's word ----
m=$(boot_id "$U")
t0=$(now)
call VM.clean_reboot "$VM"
check clean_reboot_state is_power Running
D2=$(domid)
check clean_reboot_new_domain [ "$D2" != "$D" ]
if wait_for 180 booted_since "$U" "$m"; then
    result clean_reboot_guest_booted PASS
    echo "XENTEST-TIME clean_reboot_to_marker $(elapsed "$t0" "$(now)")"
else
    result clean_reboot_guest_booted FAIL
fi

# --- hard reboot -------------------------------------------------------------
m=$(boot_id "$U")
call VM.hard_reboot "$VM"
check hard_reboot_state is_power Running
D3=$(domid)
check hard_reboot_new_domain [ "$D3" != "$D2" ]
check hard_reboot_guest_booted wait_for 180 booted_since "$U" "$m"

# --- suspend / resume ----------------------------------------------------------
check suspend_guest_ticking wait_for 30 ticks_beyond "$U" 2
m=$(boot_id "$U")
t0=$(now)
out=$(call VM.suspend "$VM")
echo "XENTEST-TIME suspend $(elapsed "$t0" "$(now)")"
[ -z "$out" ] || echo "XENTEST-INFO suspend: $out"
check suspend_state is_power Suspended
check suspend_domain_gone only_dom0
before=$(last_tick "$U")

# Bad input: a damaged image (its first page zeroed) must fail the resume
# cleanly: the VM stays Suspended with its image, no domain is left
# behind, xapid lives on; with the page put back, the resume works.
img=$(find $STATE/sr -type f -size +65536k | head -n 1)
dd if="$img" of=/tmp/image-head bs=4096 count=1 2>/dev/null
dd if=/dev/zero of="$img" bs=4096 count=1 conv=notrunc 2>/dev/null
out=$(call VM.resume "$VM" false false)
rc=$?
echo "XENTEST-INFO damaged image: $out"
check resume_damaged_image_refused [ $rc -ne 0 -a -n "$img" ]
check resume_damaged_image_stays_suspended is_power Suspended
check resume_damaged_image_leaves_nothing only_dom0
dd if=/tmp/image-head of="$img" bs=4096 count=1 conv=notrunc 2>/dev/null

t0=$(now)
out=$(call VM.resume "$VM" false false)
echo "XENTEST-TIME resume $(elapsed "$t0" "$(now)")"
[ -z "$out" ] || echo "XENTEST-INFO resume: $out"
check resume_state is_power Running
check resume_guest_continues wait_for 60 ticks_beyond "$U" "${before:-0}"
check resume_not_rebooted [ "$(boot_id "$U")" = "$m" ]

# --- a restarted xapid adopts the running domain -------------------------------
D4=$(domid)
stop_xapid
start_xapid
check restart_keeps_running is_power Running
check restart_keeps_domid [ "$(domid)" = "$D4" ]

# --- clean shutdown ------------------------------------------------------------
t0=$(now)
call VM.clean_shutdown "$VM"
echo "XENTEST-TIME clean_shutdown $(elapsed "$t0" "$(now)")"
check clean_shutdown_state is_power Halted
check clean_shutdown_domain_gone only_dom0

# --- start paused, unpause, hard shutdown ------------------------------------
m=$(boot_id "$U")
call VM.start "$VM" true false
check start_paused_state is_power Paused
call VM.unpause "$VM"
check start_paused_then_runs wait_for 180 booted_since "$U" "$m"
call VM.hard_shutdown "$VM"
check hard_shutdown_state is_power Halted
check hard_shutdown_domain_gone only_dom0

# --- PVH: the same kernel, entered through its PVH note -----------------------
# Needs HAP or shadow paging for the guest; the nested Xen under TCG has no
# HAP and Debian's build no shadow paging, so libxl refuses: then what is
# checked is that the refusal carries libxl's reason and leaves nothing.
P=$(call VM.clone "$VM" pvh-guest)
call VM.add_to_platform "$P" domain_type pvh
PU=$(call VM.get_uuid "$P")
t0=$(now)
out=$(call VM.start "$P" false false)
case "$out" in
*"neither hap nor shadow"*)
    echo "XENTEST-INFO pvh: refused here: $out"
    check pvh only_dom0
    ;;
*)
    [ -z "$out" ] || echo "XENTEST-INFO pvh start: $out"
    if wait_for 120 booted_since "$PU" ""; then
        result pvh PASS booted
        echo "XENTEST-TIME pvh_start_to_marker $(elapsed "$t0" "$(now)")"
    else
        result pvh FAIL
    fi
    call VM.hard_shutdown "$P"
    ;;
esac
check pvh_leaves_nothing only_dom0

stop_xapid
[ $fails -eq 0 ] || dump_logs
echo "XENTEST-SUMMARY failures=$fails"
