"""VM lifecycle through the simulated hypervisor (XENAPI.md section 4).

Every power operation is tried from every power state; the allowed ones
must land in the right state and the others must fail with exactly
VM_BAD_POWER_STATE [vm, expected, actual].  Then: allowed_operations
agreeing with what succeeds, concurrency, templates and dom0, memory
admission and host accounting, fault injection and rollback, events,
clone / copy / snapshot / checkpoint / revert / provision / destroy,
memory and VCPU constraints, VBD / VIF / console rules.
"""

import os
import threading
import time

import pytest

import xapilib
from xapilib import XapiError, expect_error

NULL = "OpaqueRef:NULL"
MIB = 1 << 20

# op -> (allowed source states, state afterwards, arguments after the vm)
POWER_OPS = {
    "start": ({"Halted"}, "Running", (False, False)),
    "start_on": ({"Halted"}, "Running", ("HOST", False, False)),
    "clean_shutdown": ({"Running"}, "Halted", ()),
    "hard_shutdown": ({"Paused", "Suspended", "Running"}, "Halted", ()),
    "shutdown": ({"Paused", "Suspended", "Running"}, "Halted", ()),
    "clean_reboot": ({"Running"}, "Running", ()),
    "hard_reboot": ({"Paused", "Running"}, "Running", ()),
    "pause": ({"Running"}, "Paused", ()),
    "unpause": ({"Paused"}, "Running", ()),
    "suspend": ({"Running"}, "Suspended", ()),
    "resume": ({"Suspended"}, "Running", (False, False)),
    "resume_on": ({"Suspended"}, "Running", ("HOST", False, False)),
}

# The "expected" parameter of VM_BAD_POWER_STATE, in xapi's order.
EXPECTED = {
    "start": "halted",
    "start_on": "halted",
    "clean_shutdown": "running",
    "clean_reboot": "running",
    "pause": "running",
    "suspend": "running",
    "unpause": "paused",
    "resume": "suspended",
    "resume_on": "suspended",
    "hard_reboot": "paused, running",
    "hard_shutdown": "paused, suspended, running",
    "shutdown": "paused, suspended, running",
}

STATES = ["Halted", "Running", "Paused", "Suspended"]

# xapi never lists "shutdown" in allowed_operations (it is not one of the
# candidates update_allowed_operations tries).
NOT_LISTED = {"shutdown"}


@pytest.fixture(scope="module")
def api(xapid):
    return xapid.login()


def host_of(api):
    return api.host.get_all()[0]


def free_memory(api):
    h = host_of(api)
    return int(api.host_metrics.get_memory_free(api.host.get_metrics(h)))


def template(api, name="Debian Bookworm 12"):
    refs = api.VM.get_by_name_label(name)
    assert refs, "bootstrap should have made template %s" % name
    return refs[0]


def new_vm(api, name="vm", memory=256 * MIB):
    """A small installed VM: cloned from a template, provisioned."""
    vm = api.VM.clone(template(api), name)
    api.VM.provision(vm)
    api.VM.set_memory_limits(vm, str(memory), str(memory), str(memory),
                             str(memory))
    return vm


def put_in_state(api, vm, state):
    if state == "Halted":
        return
    api.VM.start(vm, state == "Paused", False)
    if state == "Suspended":
        api.VM.suspend(vm)
    assert api.VM.get_power_state(vm) == state


def run_op(api, vm, op):
    args = tuple(host_of(api) if a == "HOST" else a
                 for a in POWER_OPS[op][2])
    return getattr(api.VM, op)(vm, *args)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("op", sorted(POWER_OPS))
def test_power_op_from_state(api, op, state):
    vm = new_vm(api, "%s-from-%s" % (op, state))
    put_in_state(api, vm, state)
    allowed_states, after, _ = POWER_OPS[op]
    allowed_before = set(api.VM.get_allowed_operations(vm))
    if state in allowed_states:
        run_op(api, vm, op)
        assert api.VM.get_power_state(vm) == after
        assert op in allowed_before or op in NOT_LISTED
    else:
        e = expect_error(run_op, api, vm, op)
        assert e.details == ["VM_BAD_POWER_STATE", vm, EXPECTED[op],
                             state.lower()]
        assert op not in allowed_before
        assert api.VM.get_power_state(vm) == state
    rec = api.VM.get_record(vm)
    assert rec["current_operations"] == {}
    if rec["power_state"] in ("Running", "Paused"):
        assert rec["resident_on"] == host_of(api)
        assert int(rec["domid"]) > 0
        assert rec["consoles"]
    else:
        assert rec["resident_on"] == NULL
        assert rec["domid"] == "-1"
        assert rec["consoles"] == []
    api.VM.hard_shutdown(vm) if rec["power_state"] != "Halted" else None
    api.VM.destroy(vm)


@pytest.mark.parametrize("state", STATES)
def test_power_state_reset(api, state):
    vm = new_vm(api, "psr-" + state)
    put_in_state(api, vm, state)
    if state in ("Running", "Paused"):
        # The domain still runs here: forgetting it would leak it.
        e = expect_error(api.VM.power_state_reset, vm)
        assert e.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
        api.VM.hard_shutdown(vm)
    else:
        api.VM.power_state_reset(vm)
        assert api.VM.get_power_state(vm) == "Halted"
    api.VM.destroy(vm)


def test_allowed_operations_per_state(api):
    vm = new_vm(api, "allowed")
    ops = set(api.VM.get_allowed_operations(vm))
    assert {"start", "start_on", "clone", "copy", "snapshot", "destroy",
            "export", "make_into_template"} <= ops
    assert not ops & {"clean_shutdown", "pause", "suspend", "resume",
                      "provision", "revert"}
    api.VM.start(vm, False, False)
    ops = set(api.VM.get_allowed_operations(vm))
    assert {"clean_shutdown", "hard_shutdown", "clean_reboot", "hard_reboot",
            "pause", "suspend", "snapshot", "checkpoint"} <= ops
    assert not ops & {"start", "destroy", "clone", "unpause", "resume"}
    api.VM.pause(vm)
    ops = set(api.VM.get_allowed_operations(vm))
    assert {"unpause", "hard_shutdown", "hard_reboot"} <= ops
    assert not ops & {"pause", "clean_shutdown", "suspend"}
    api.VM.unpause(vm)
    api.VM.suspend(vm)
    ops = set(api.VM.get_allowed_operations(vm))
    assert {"resume", "resume_on", "hard_shutdown", "destroy"} <= ops
    assert not ops & {"start", "pause", "clean_shutdown"}
    api.VM.hard_shutdown(vm)
    api.VM.destroy(vm)


def test_templates_and_dom0(api):
    t = template(api)
    e = expect_error(api.VM.start, t, False, False)
    assert e.details == ["VM_IS_TEMPLATE", t, "start"]
    # a default template cannot be destroyed either
    e = expect_error(api.VM.destroy, t)
    assert e.details == ["VM_IS_TEMPLATE", t, "destroy"]
    dom0 = [r for r, v in api.VM.get_all_records().items()
            if v["is_control_domain"]][0]
    e = expect_error(api.VM.clean_shutdown, dom0)
    assert e.code == "OPERATION_NOT_ALLOWED"
    e = expect_error(api.VM.start, dom0, False, False)
    assert e.details == ["VM_BAD_POWER_STATE", dom0, "halted", "running"]
    e = expect_error(api.VM.destroy, dom0)
    assert e.code == "VM_BAD_POWER_STATE"  # power state is checked first
    # make_into_template: Halted only
    vm = new_vm(api, "tmpl")
    api.VM.start(vm, False, False)
    e = expect_error(api.VM.set_is_a_template, vm, True)
    assert e.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    api.VM.hard_shutdown(vm)
    api.VM.set_is_a_template(vm, True)
    assert "start" not in api.VM.get_allowed_operations(vm)
    e = expect_error(api.VM.start, vm, False, False)
    assert e.details == ["VM_IS_TEMPLATE", vm, "start"]
    api.VM.set_is_a_template(vm, False)
    api.VM.destroy(vm)


def test_blocked_operations(api):
    vm = new_vm(api, "blocked")
    api.VM.add_to_blocked_operations(vm, "start", "maintenance")
    assert "start" not in api.VM.get_allowed_operations(vm)
    e = expect_error(api.VM.start, vm, False, False)
    assert e.details == ["OPERATION_BLOCKED", vm, "maintenance"]
    api.VM.remove_from_blocked_operations(vm, "start")
    api.VM.start(vm, False, False)
    api.VM.hard_shutdown(vm)
    api.VM.destroy(vm)


def test_memory_accounting_and_metrics(api):
    vm = new_vm(api, "mem", memory=512 * MIB)
    before = free_memory(api)
    api.VM.start(vm, False, False)
    assert free_memory(api) == before - 512 * MIB
    rec = api.VM.get_record(vm)
    m = api.VM_metrics.get_record(rec["metrics"])
    assert int(m["memory_actual"]) == 512 * MIB
    assert int(m["VCPUs_number"]) == int(rec["VCPUs_at_startup"])
    gm = api.VM_guest_metrics.get_record(rec["guest_metrics"])
    assert gm["os_version"]["distro"] == "debian"
    assert gm["live"] is True
    api.VM.clean_shutdown(vm)
    assert free_memory(api) == before
    rec = api.VM.get_record(vm)
    assert rec["guest_metrics"] == NULL
    assert api.VM_metrics.get_memory_actual(rec["metrics"]) == "0"
    api.VM.destroy(vm)


def test_not_enough_memory(api):
    vm = new_vm(api, "huge")
    free = free_memory(api)
    big = (free // MIB + 1024) * MIB
    api.VM.set_memory_limits(vm, str(big), str(big), str(big), str(big))
    e = expect_error(api.VM.start, vm, False, False)
    assert e.code == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert int(e.params[0]) == big
    assert int(e.params[1]) == free
    rec = api.VM.get_record(vm)
    assert rec["power_state"] == "Halted"
    assert rec["current_operations"] == {}
    assert rec["scheduled_to_be_resident_on"] == NULL
    assert free_memory(api) == free
    api.VM.destroy(vm)


def test_destroy_keeps_disks(api):
    vm = new_vm(api, "gone")
    vbds = api.VM.get_VBDs(vm)
    vdis = [api.VBD.get_VDI(b) for b in vbds]
    metrics = api.VM.get_metrics(vm)
    api.VM.start(vm, False, False)
    e = expect_error(api.VM.destroy, vm)
    assert e.details == ["VM_BAD_POWER_STATE", vm, "halted, suspended",
                         "running"]
    api.VM.hard_shutdown(vm)
    api.VM.destroy(vm)
    assert expect_error(api.VM.get_record, vm).code == "HANDLE_INVALID"
    assert expect_error(api.VBD.get_record, vbds[0]).code == "HANDLE_INVALID"
    assert expect_error(api.VM_metrics.get_record,
                        metrics).code == "HANDLE_INVALID"
    for v in vdis:
        assert api.VDI.get_VBDs(v) == []
        api.VDI.destroy(v)


def test_provision_clone_copy(api):
    t = template(api)
    vm = api.VM.clone(t, "prov")
    assert api.VM.get_is_a_template(vm) is True
    assert api.VM.get_VBDs(vm) == []
    seed = api.VM.get_other_config(vm)["mac_seed"]
    assert seed != api.VM.get_other_config(t).get("mac_seed")
    api.VM.provision(vm)
    assert api.VM.get_is_a_template(vm) is False
    vbds = api.VM.get_VBDs(vm)
    assert len(vbds) == 1
    b = api.VBD.get_record(vbds[0])
    assert b["userdevice"] == "0" and b["bootable"] is True
    vdi = api.VDI.get_record(b["VDI"])
    assert vdi["virtual_size"] == "10737418240"
    assert vdi["type"] == "system"
    sr = api.pool.get_default_SR(api.pool.get_all()[0])
    assert vdi["SR"] == sr
    e = expect_error(api.VM.provision, vm)
    assert e.details == ["ONLY_PROVISION_TEMPLATE"]

    c = api.VM.clone(vm, "prov-clone")
    cb = api.VBD.get_record(api.VM.get_VBDs(c)[0])
    assert cb["VDI"] != b["VDI"]
    assert api.VDI.get_SR(cb["VDI"]) == sr
    assert api.VM.get_power_state(c) == "Halted"
    cp = api.VM.copy(vm, "prov-copy", NULL)
    assert len(api.VM.get_VBDs(cp)) == 1
    api.VM.start(vm, False, False)
    e = expect_error(api.VM.clone, vm, "x")
    assert e.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    api.VM.hard_shutdown(vm)
    for v in (vm, c, cp):
        api.VM.destroy(v)


def test_snapshot_checkpoint_revert(api):
    vm = new_vm(api, "snappy")
    api.VM.start(vm, False, False)
    s = api.VM.snapshot(vm, "s1")
    rec = api.VM.get_record(s)
    assert rec["is_a_snapshot"] and rec["is_a_template"]
    assert rec["snapshot_of"] == vm
    assert rec["power_state"] == "Halted"
    assert s in api.VM.get_snapshots(vm)
    assert api.VDI.get_is_a_snapshot(
        api.VBD.get_VDI(api.VM.get_VBDs(s)[0])) is True
    cp = api.VM.checkpoint(vm, "c1")
    crec = api.VM.get_record(cp)
    assert crec["power_state"] == "Suspended"
    assert crec["suspend_VDI"] != NULL
    e = expect_error(api.VM.start, s, False, False)
    assert e.details == ["VM_IS_SNAPSHOT", s, "start"]
    e = expect_error(api.VM.revert, vm)
    assert e.details == ["ONLY_REVERT_SNAPSHOT"]
    # revert stops the VM and gives it the snapshot's disks
    old_vdi = api.VBD.get_VDI(api.VM.get_VBDs(vm)[0])
    api.VM.set_name_description(vm, "changed after snapshot")
    api.VM.revert(s)
    assert api.VM.get_power_state(vm) == "Halted"
    new_vdi = api.VBD.get_VDI(api.VM.get_VBDs(vm)[0])
    assert new_vdi != old_vdi
    api.VM.revert(cp)
    assert api.VM.get_power_state(vm) == "Suspended"
    api.VM.resume(vm, False, False)
    assert api.VM.get_power_state(vm) == "Running"
    api.VM.hard_shutdown(vm)
    api.VM.snapshot_with_quiesce(vm, "q1")
    for v in api.VM.get_snapshots(vm) + [vm]:
        api.VM.destroy(v)


def test_memory_constraints(api):
    vm = new_vm(api, "constraints")
    e = expect_error(api.VM.set_memory_limits, vm, str(512 * MIB),
                     str(256 * MIB), str(256 * MIB), str(256 * MIB))
    assert e.code == "MEMORY_CONSTRAINT_VIOLATION"
    e = expect_error(api.VM.set_memory_dynamic_range, vm, str(300 * MIB),
                     str(200 * MIB))
    assert e.code == "MEMORY_CONSTRAINT_VIOLATION"
    e = expect_error(api.VM.set_memory_static_max, vm, str(128 * MIB))
    assert e.code == "MEMORY_CONSTRAINT_VIOLATION"
    api.VM.set_memory_static_range(vm, str(64 * MIB), str(1024 * MIB))
    api.VM.set_memory_dynamic_range(vm, str(128 * MIB), str(512 * MIB))
    api.VM.set_memory(vm, str(768 * MIB))
    rec = api.VM.get_record(vm)
    assert (rec["memory_static_min"], rec["memory_dynamic_min"],
            rec["memory_dynamic_max"], rec["memory_static_max"]) == (
        str(64 * MIB), str(768 * MIB), str(768 * MIB), str(768 * MIB))
    api.VM.set_VCPUs_max(vm, "4")
    api.VM.set_VCPUs_at_startup(vm, "2")
    e = expect_error(api.VM.set_VCPUs_at_startup, vm, "8")
    assert e.details == ["INVALID_VALUE", "VCPUs_at_startup", "8"]
    e = expect_error(api.VM.set_VCPUs_max, vm, "1")
    assert e.details == ["INVALID_VALUE", "VCPUs_max", "1"]
    api.VM.start(vm, False, False)
    e = expect_error(api.VM.set_memory_limits, vm, *[str(256 * MIB)] * 4)
    assert e.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    e = expect_error(api.VM.set_VCPUs_max, vm, "8")
    assert e.code == "VM_BAD_POWER_STATE"
    api.VM.hard_shutdown(vm)
    api.VM.destroy(vm)


def test_vm_create_record(api):
    rec = dict(api.VM.get_record(template(api, "Other install media")))
    for k in ("uuid", "metrics", "guest_metrics", "allowed_operations",
              "current_operations", "consoles", "VBDs", "VIFs"):
        rec.pop(k, None)
    rec["name_label"] = "from-record"
    rec["is_a_template"] = False
    rec["other_config"] = {}
    vm = api.VM.create(rec)
    r = api.VM.get_record(vm)
    assert "mac_seed" in r["other_config"]
    assert r["metrics"] != NULL
    assert api.VM_metrics.get_uuid(r["metrics"])
    assert "start" in r["allowed_operations"]
    bad = dict(rec, memory_static_min=str(1024 * MIB))
    e = expect_error(api.VM.create, bad)
    assert e.code == "MEMORY_CONSTRAINT_VIOLATION"
    api.VM.destroy(vm)


def network(api):
    nets = api.network.get_all()
    if nets:
        return nets[0]
    return api.network.create({"name_label": "test net",
                               "name_description": "", "MTU": "1500",
                               "other_config": {}, "bridge": "xenbr9",
                               "managed": True, "tags": []})


def vif_rec(vm, net, device, mac=""):
    return {"device": device, "network": net, "VM": vm, "MAC": mac,
            "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
            "qos_algorithm_params": {}}


def test_vif_rules(api):
    vm = new_vm(api, "nics")
    net = network(api)
    v0 = api.VIF.create(vif_rec(vm, net, "0"))
    r = api.VIF.get_record(v0)
    assert r["MAC_autogenerated"] is True
    assert len(r["MAC"]) == 17
    e = expect_error(api.VIF.create, vif_rec(vm, net, "0"))
    assert e.details == ["DEVICE_ALREADY_EXISTS", "0"]
    e = expect_error(api.VIF.create, vif_rec(vm, net, "eth1"))
    assert e.details == ["INVALID_DEVICE", "eth1"]
    e = expect_error(api.VIF.create, vif_rec(vm, net, "1", "zz:zz"))
    assert e.details == ["MAC_INVALID", "zz:zz"]
    v1 = api.VIF.create(vif_rec(vm, net, "1", "02:11:22:33:44:55"))
    assert api.VIF.get_MAC_autogenerated(v1) is False
    assert "0" not in api.VM.get_allowed_VIF_devices(vm)
    e = expect_error(api.VIF.plug, v1)
    assert e.details == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    api.VM.start(vm, False, False)
    assert api.VIF.get_currently_attached(v0) is True
    gm = api.VM.get_guest_metrics(vm)
    assert "0/ip" in api.VM_guest_metrics.get_networks(gm)
    api.VIF.unplug(v1)
    assert api.VIF.get_currently_attached(v1) is False
    api.VIF.plug(v1)
    e = expect_error(api.VIF.destroy, v1)
    assert e.code == "DEVICE_ALREADY_ATTACHED"
    api.VM.hard_shutdown(vm)
    assert api.VIF.get_currently_attached(v0) is False
    api.VIF.destroy(v1)
    # the same VM gets the same generated MAC for the same device again
    mac = api.VIF.get_MAC(v0)
    api.VIF.destroy(v0)
    assert api.VIF.get_MAC(api.VIF.create(vif_rec(vm, net, "0"))) == mac
    api.VM.destroy(vm)


def vbd_rec(vm, vdi, userdevice, type_="Disk", empty=False):
    return {"VM": vm, "VDI": vdi, "userdevice": userdevice, "bootable": False,
            "mode": "RO" if type_ == "CD" else "RW", "type": type_,
            "empty": empty, "other_config": {}, "qos_algorithm_type": "",
            "qos_algorithm_params": {}}


def test_vbd_and_vdi_rules(api):
    vm = new_vm(api, "disks")
    sr = api.pool.get_default_SR(api.pool.get_all()[0])
    vdi = api.VDI.create({"SR": sr, "virtual_size": str(64 * MIB),
                          "type": "user", "sharable": False,
                          "read_only": False, "other_config": {},
                          "name_label": "data"})
    assert api.VDI.get_virtual_size(vdi) == str(64 * MIB)
    e = expect_error(api.VBD.create, vbd_rec(vm, vdi, "0"))
    assert e.details == ["DEVICE_ALREADY_EXISTS", "0"]
    b = api.VBD.create(vbd_rec(vm, vdi, "autodetect"))
    assert api.VBD.get_userdevice(b) == "1"
    cd = api.VBD.create(vbd_rec(vm, NULL, "3", "CD", True))
    e = expect_error(api.VBD.eject, cd)
    assert e.details == ["VBD_IS_EMPTY", cd]
    api.VBD.insert(cd, vdi)
    e = expect_error(api.VBD.insert, cd, vdi)
    assert e.details == ["VBD_NOT_EMPTY", cd]
    api.VBD.eject(cd)
    e = expect_error(api.VBD.plug, b)
    assert e.details == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    api.VM.start(vm, False, False)
    assert api.VBD.get_currently_attached(b) is True
    assert api.VBD.get_device(b) == "xvdb"
    e = expect_error(api.VDI.destroy, vdi)
    assert e.details == ["VDI_IN_USE", vdi, "destroy"]
    api.VBD.unplug(b)
    e = expect_error(api.VBD.unplug, b)
    assert e.details == ["DEVICE_ALREADY_DETACHED", b]
    api.VBD.plug(b)
    api.VM.hard_shutdown(vm)
    api.VDI.resize(vdi, str(128 * MIB))
    assert api.VDI.get_virtual_size(vdi) == str(128 * MIB)
    clone = api.VDI.clone(vdi, {})
    snap = api.VDI.snapshot(vdi, {})
    assert api.VDI.get_snapshot_of(snap) == vdi
    copy = api.VDI.copy(vdi, sr, NULL, NULL)
    for v in (clone, snap, copy):
        assert api.VDI.get_virtual_size(v) == str(128 * MIB)
        api.VDI.destroy(v)
    api.VDI.destroy(vdi)
    assert expect_error(api.VBD.get_record, b).code == "HANDLE_INVALID"
    api.VM.destroy(vm)


def test_consoles(api):
    vm = new_vm(api, "console")
    api.VM.start(vm, False, False)
    cons = api.VM.get_consoles(vm)
    assert cons
    address = api.host.get_address(host_of(api))
    for c in cons:
        r = api.console.get_record(c)
        assert r["protocol"] in ("vt100", "rfb")
        assert r["location"] == "https://%s/console?uuid=%s" % (address,
                                                                r["uuid"])
    api.VM.clean_shutdown(vm)
    assert api.VM.get_consoles(vm) == []
    for c in cons:
        assert expect_error(api.console.get_record,
                            c).code == "HANDLE_INVALID"
    api.VM.destroy(vm)


def test_power_state_events(xapid, api):
    vm = new_vm(api, "evented")
    token = api.event.__getattr__("from")(["vm"], "", 0.0)["token"]
    api.VM.start(vm, False, False)
    seen = []
    deadline = time.time() + 10
    while time.time() < deadline and "Running" not in seen:
        r = api.event.__getattr__("from")(["vm"], token, 5.0)
        token = r["token"]
        for ev in r["events"]:
            if ev["ref"] == vm and ev["operation"] == "mod":
                seen.append(ev["snapshot"]["power_state"])
    assert "Running" in seen
    api.VM.hard_shutdown(vm)
    api.VM.destroy(vm)


# --- with a server of its own: fault injection and delays -----------------


@pytest.fixture
def sim_server(xapid_factory):
    """Starts a server with sim knobs in its environment."""
    def start(**env):
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            x = xapid_factory.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return x, x.login()
    return start


def test_start_fault_rolls_back(sim_server):
    x, api = sim_server(XAPID_SIM_FAULTS="start:2,suspend:1,resume:1")
    vm = new_vm(api, "faulty")
    free = free_memory(api)
    api.VM.start(vm, False, False)
    api.VM.hard_shutdown(vm)
    e = expect_error(api.VM.start, vm, False, False)  # the 2nd start
    assert e.code == "INTERNAL_ERROR"
    rec = api.VM.get_record(vm)
    assert rec["power_state"] == "Halted"
    assert rec["domid"] == "-1"
    assert rec["resident_on"] == NULL
    assert rec["scheduled_to_be_resident_on"] == NULL
    assert rec["current_operations"] == {}
    assert rec["consoles"] == []
    assert "start" in rec["allowed_operations"]
    assert free_memory(api) == free
    api.VM.start(vm, False, False)  # the 3rd works
    e = expect_error(api.VM.suspend, vm)
    assert e.code == "INTERNAL_ERROR"
    assert api.VM.get_power_state(vm) == "Running"
    api.VM.suspend(vm)
    e = expect_error(api.VM.resume, vm, False, False)
    assert api.VM.get_power_state(vm) == "Suspended"
    assert api.VM.get_suspend_VDI(vm) != NULL
    assert free_memory(api) == free
    api.VM.resume(vm, False, False)
    assert api.VM.get_power_state(vm) == "Running"
    api.VM.hard_shutdown(vm)


def test_concurrent_operations(sim_server):
    x, api = sim_server(XAPID_SIM_DELAY_MS="create:1500")
    vm = new_vm(api, "busy")
    task = api.Async.VM.start(vm, False, False)
    deadline = time.time() + 5
    while not api.VM.get_current_operations(vm) and time.time() < deadline:
        time.sleep(0.02)
    ops = api.VM.get_current_operations(vm)
    assert ops == {task: "start"}
    assert api.VM.get_allowed_operations(vm) == []
    e = expect_error(api.VM.start, vm, False, False)
    # power state is checked before concurrency: still Halted
    e = expect_error(api.VM.clone, vm, "x")
    assert e.details == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "start",
                         task]
    e = expect_error(api.VM.destroy, vm)
    assert e.details == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "start",
                         task]
    while api.task.get_status(task) == "pending":
        time.sleep(0.05)
    assert api.task.get_status(task) == "success"
    assert api.VM.get_power_state(vm) == "Running"
    assert api.VM.get_current_operations(vm) == {}


def test_restart_reconciles(xapid_fn):
    api = xapid_fn.login()
    vm = new_vm(api, "lost")
    api.VM.start(vm, False, False)
    xapid_fn.stop()
    xapid_fn.start()
    api = xapid_fn.login()
    # the simulator's domains died with the process
    rec = api.VM.get_record(vm)
    assert rec["power_state"] == "Halted"
    assert rec["resident_on"] == NULL
    assert "start" in rec["allowed_operations"]
    api.VM.start(vm, False, False)
    api.VM.hard_shutdown(vm)


def test_parallel_starts(xapid):
    apis = [xapid.login() for _ in range(4)]
    vms = [new_vm(apis[0], "par%d" % i, memory=64 * MIB) for i in range(16)]
    errors = []

    def worker(api, mine):
        try:
            for vm in mine:
                api.VM.start(vm, False, False)
                api.VM.hard_shutdown(vm)
        except XapiError as e:  # pragma: no cover - reported below
            errors.append(e.details)

    threads = [threading.Thread(target=worker, args=(apis[i], vms[i::4]))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for vm in vms:
        apis[0].VM.destroy(vm)
