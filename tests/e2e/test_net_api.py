"""Network API rules that need no switch: bridge names, VLAN and bond
argument checks, VIF ports on the simulated network backend (the default).

--nics names no device, so the host's real interfaces never become PIFs
here (and nothing of the machine's is touched)."""

import pytest

from xapilib import expect_error


@pytest.fixture(scope="module")
def s(xapid_module_factory):
    x = xapid_module_factory.start(extra_args=["--network", "sim",
                                               "--nics", "none-such0"])
    return x.login()


def new_network(s, label, bridge="", mtu=1500):
    return s.network.create({"name_label": label, "name_description": "",
                             "MTU": str(mtu), "other_config": {},
                             "bridge": bridge})


def test_no_pifs_when_nics_name_nothing(s):
    assert s.PIF.get_all() == []


def test_bridge_naming(s):
    a, b = new_network(s, "a"), new_network(s, "b")
    assert [s.network.get_bridge(a), s.network.get_bridge(b)] == \
        ["xapi0", "xapi1"]
    s.network.destroy(a)
    c = new_network(s, "c")
    assert s.network.get_bridge(c) == "xapi0"  # the first free one
    assert s.network.get_bridge(new_network(s, "u", "mybr")) == "mybr"
    assert expect_error(new_network, s, "d", "mybr").details == \
        ["BRIDGE_NAME_EXISTS", "mybr"]
    for bad in ("xenbr0", "xapi7", "vif3.0", "tap1", "eth0", "x" * 16):
        assert expect_error(new_network, s, "bad", bad).code == \
            "INVALID_VALUE"
    assert s.network.get_MTU(new_network(s, "m", mtu=0)) == "1500"


def test_vlan_and_bond_argument_checks(s):
    net = new_network(s, "v")
    e = expect_error(s.Bond.create, net, [], "", "balance-slb", {})
    assert e.code == "PIF_BOND_NEEDS_MORE_MEMBERS"
    e = expect_error(s.VLAN.create, "OpaqueRef:NULL", "4095", net)
    assert e.code in ("VLAN_TAG_INVALID", "HANDLE_INVALID")


def test_vm_with_vif_starts_and_stops_on_sim(s):
    net = new_network(s, "sim-net")
    tmpl = next(r for r, v in s.VM.get_all_records().items()
                if v["is_a_template"])
    vm = s.VM.clone(tmpl, "simvm")
    s.VM.set_is_a_template(vm, False)
    vif = s.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "",
                        "MTU": "0", "other_config": {},
                        "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
    s.VM.start(vm, False, False)
    assert s.VIF.get_currently_attached(vif) is True
    s.VIF.unplug(vif)
    s.VIF.plug(vif)
    s.VM.hard_shutdown(vm)
    assert s.VIF.get_currently_attached(vif) is False
    e = expect_error(s.network.destroy, net)
    assert e.code == "NETWORK_CONTAINS_VIF"
