"""xapid's Xen driver on a real Xen 4.17, nested in QEMU (label: e2e xen).

tests/xen/run.sh boots Debian's Xen 4.17 under QEMU (TCG) with a dom0
initramfs that carries xapid (--hypervisor xen), the Xen toolstack's
daemons and a test guest; inside, tests/xen/xentest.sh runs the core of
test_vm_lifecycle.py against the real hypervisor (start, pause / unpause,
clean and hard reboot, suspend / resume, clean and hard shutdown, a
restart of xapid, a domain that fails to build, a damaged suspend image,
a localhost migration at the driver's level with xapid stopped
(tests/xen/xenmig.c: migrate_receive and migrate_send over a socketpair,
then the commit; a receiver fed a stream that is not libxl's; a send
with hold whose destination gives up, after which the held domain runs
on), PVH), then a VM with a disk (a qcow2 VDI through blkback and qemu-nbd)
and a VIF (netback on an Open vSwitch bridge in dom0, with traffic both
ways) whose guest reboots and powers off by itself, and prints one
"XENTEST <name> PASS|FAIL" line per check on the serial console.  Each
check is one test here.

The whole machine boots once per module, in two to five minutes; its
serial log stays in <build>/tests/xen-run/boot.log.  Skips, naming them,
when the packages it needs are missing (scripts/deps.sh installs them).
"""

import os
import re
import subprocess

import pytest

import xapilib

RUN = os.path.join(xapilib.SOURCE_DIR, "tests", "xen", "run.sh")
OUT = os.path.join(xapilib.BUILD_DIR, "tests", "xen-run")
TIMEOUT = 600  # run.sh's QEMU stops itself at 540 s

# Every check xentest.sh makes, in order: a check that silently stops
# being reported fails here instead of vanishing.
CHECKS = [
    "xapid_start",
    "host_memory_from_xen",
    "vm_create",
    "bad_kernel_refused",
    "bad_kernel_stays_halted",
    "bad_kernel_leaves_nothing_in_xenstore",
    "bad_kernel_libxl_message_logged",
    "start",
    "start_running",
    "start_domain_named_by_uuid",
    "start_guest_ticks",
    "pause_state",
    "pause_stops_guest",
    "unpause_state",
    "unpause_guest_runs",
    "clean_reboot_state",
    "clean_reboot_new_domain",
    "clean_reboot_guest_booted",
    "hard_reboot_state",
    "hard_reboot_new_domain",
    "hard_reboot_guest_booted",
    "suspend_guest_ticking",
    "suspend_state",
    "suspend_domain_gone",
    "resume_damaged_image_refused",
    "resume_damaged_image_stays_suspended",
    "resume_damaged_image_leaves_nothing",
    "resume_state",
    "resume_guest_continues",
    "resume_not_rebooted",
    "migrate_bad_stream_refused",
    "migrate_bad_stream_guest_stays",
    "migrate_bad_stream_name_back",
    "migrate_bad_stream_guest_runs",
    "migrate_refused_resumes",
    "migrate_refused_guest_stays",
    "migrate_refused_name_back",
    "migrate_refused_guest_runs",
    "migrate_refused_not_rebooted",
    "migrate",
    "migrate_new_domain",
    "migrate_new_domain_named_by_uuid",
    "migrate_old_domain_gone",
    "migrate_guest_continues",
    "migrate_not_rebooted",
    "restart_keeps_running",
    "restart_keeps_domid",
    "clean_shutdown_state",
    "clean_shutdown_domain_gone",
    "start_paused_state",
    "start_paused_then_runs",
    "hard_shutdown_state",
    "hard_shutdown_domain_gone",
    "dev_start",
    "dev_marker",
    "disk_blkback_device",
    "disk_seen_by_guest",
    "disk_written_by_guest",
    "vif_port_on_bridge",
    "vif_external_ids",
    "guest_pings_dom0",
    "dom0_pings_guest",
    "guest_reboot_guest_booted",
    "guest_reboot_new_domid",
    "guest_reboot_running",
    "guest_reboot_domain_is_the_vms",
    "disk_persists_across_reboot",
    "guest_reboot_vif_replugged",
    "guest_reboot_network_again",
    "guest_poweroff_halted",
    "guest_poweroff_domain_gone",
    "guest_poweroff_port_removed",
    "guest_poweroff_disk_released",
    "dom0_reads_guest_disk",
    "pvh",
    "pvh_leaves_nothing",
]
# Checks that need Open vSwitch in dom0 (reported SKIP without it).
OVS_CHECKS = {
    "vif_port_on_bridge", "vif_external_ids", "guest_pings_dom0",
    "dom0_pings_guest", "guest_reboot_vif_replugged",
    "guest_reboot_network_again", "guest_poweroff_port_removed",
}


class Run:
    def __init__(self, rc, log, stdout):
        self.rc = rc
        self.log = log
        self.stdout = stdout
        self.results = {}
        self.times = {}
        for line in log.splitlines():
            m = re.match(r"XENTEST (\S+) (PASS|FAIL|SKIP)(?: (.*))?$", line)
            if m:
                self.results[m.group(1)] = (m.group(2), m.group(3) or "")
            m = re.match(r"XENTEST-TIME (\S+) ([0-9.]+)$", line)
            if m:
                self.times[m.group(1)] = float(m.group(2))

    def tail(self, n=40):
        return "\n".join(self.log.splitlines()[-n:])


@pytest.fixture(scope="module")
def run():
    build = xapilib.BUILD_DIR
    if not os.access(os.path.join(build, "bin", "xapid"), os.X_OK):
        pytest.skip("xapid is not built in %s" % build)
    os.makedirs(OUT, exist_ok=True)
    try:
        p = subprocess.run(["bash", RUN, build, OUT], capture_output=True,
                           text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("the nested Xen run took over %d s" % TIMEOUT)
    if p.returncode == 77:
        missing = [ln for ln in p.stdout.splitlines()
                   if ln.startswith("MISSING")]
        pytest.skip("; ".join(missing) or "needed packages are missing")
    try:
        with open(os.path.join(OUT, "boot.log"), "rb") as f:
            log = f.read().decode("utf-8", "replace").replace("\r", "")
    except OSError:
        pytest.fail("no boot.log: run.sh said\n%s\n%s"
                    % (p.stdout[-3000:], p.stderr[-3000:]))
    r = Run(p.returncode, log, p.stdout)
    for what, secs in sorted(r.times.items()):
        print("xen: %s %.2f s" % (what, secs))
    return r


def test_machine_ran_to_the_end(run):
    assert "XENTEST-BEGIN xen 4.17" in run.log, run.tail()
    assert "XENTEST-END" in run.log, run.tail()
    assert "XENTEST-SUMMARY failures=" in run.log, run.tail()


@pytest.mark.parametrize("check", CHECKS)
def test_check(run, check):
    if check in OVS_CHECKS and check not in run.results and \
            "XENTEST vif_port_on_bridge SKIP" in run.log:
        pytest.skip("no Open vSwitch in the dom0 image")
    assert check in run.results, \
        "xentest.sh never reported %s:\n%s" % (check, run.tail())
    status, detail = run.results[check]
    if status == "SKIP":
        pytest.skip(detail)
    assert status == "PASS", "%s: %s\n%s" % (check, detail, run.tail(80))


def test_no_unlisted_failures(run):
    bad = [k for k, (s, _) in run.results.items() if s == "FAIL"]
    assert not bad, bad


def test_start_to_marker_measured(run):
    # The figure the issue asks for: VM.start to the guest's first line.
    assert "start_to_marker" in run.times, run.tail()
    assert run.times["start_to_marker"] < 180


def test_migration_measured(run):
    # The localhost migration's figures (xenmig): the send, the driver's
    # downtime (the guest stopped for the last copy to the stream's end),
    # the commit (the restore's end and the unpause) and the guest's whole
    # stop, which is the downtime plus the commit.
    if run.results.get("migrate", ("",))[0] != "PASS":
        pytest.skip("the migration did not run or failed (see test_check)")
    t = run.times
    for k in ("migrate_send", "migrate_downtime", "migrate_commit",
              "migrate_stopped"):
        assert k in t, run.tail()
    assert 0 < t["migrate_downtime"] <= t["migrate_send"] + 0.01
    assert t["migrate_stopped"] >= t["migrate_downtime"]
    assert t["migrate_stopped"] < 120
