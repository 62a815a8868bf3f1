"""Networking on a real Open vSwitch: PIFs, bridges, VLANs, bonds and VIF
ports, checked with ovs-vsctl, plus restarts of ovsdb-server and of xapid
with convergence afterwards.

Everything runs in a private network namespace (ovs_env.OvsEnv): veths
play the host's NICs and ovs-vswitchd uses the userspace datapath.  Skips,
naming what is missing, when Open vSwitch or namespaces are unavailable.
The tests of this module share one switch and one xapid and run in order.
"""

import os
import re
import subprocess
import time

import pytest

import ovs_env
from xapilib import expect_error

NO_OVS = ovs_env.missing()
pytestmark = pytest.mark.skipif(NO_OVS is not None, reason=str(NO_OVS))


@pytest.fixture(scope="module")
def ovs():
    env = ovs_env.OvsEnv(nics=3)
    try:
        env.start()
    except Exception as e:  # a machine that cannot run it: say so
        env.close()
        pytest.skip("cannot run ovs-vswitchd here: %s" % e)
    yield env
    env.close()


@pytest.fixture(scope="module")
def server(ovs, xapid_module_factory):
    return xapid_module_factory.start(extra_args=ovs.xapid_args())


@pytest.fixture(scope="module")
def s(server):
    return server.login()


def pif_of(s, device):
    for ref, p in s.PIF.get_all_records().items():
        if p["device"] == device and p["VLAN"] == "-1":
            return ref
    raise AssertionError("no PIF for %s" % device)


def new_network(s, label, bridge="", mtu=1500):
    return s.network.create({"name_label": label, "name_description": "",
                             "MTU": str(mtu), "other_config": {},
                             "bridge": bridge})


def new_vm(s, name, networks, mtu=0):
    tmpl = next(r for r, v in s.VM.get_all_records().items()
                if v["is_a_template"])
    vm = s.VM.clone(tmpl, name)
    s.VM.set_is_a_template(vm, False)
    vifs = []
    for i, net in enumerate(networks):
        vifs.append(s.VIF.create({
            "device": str(i), "network": net, "VM": vm, "MAC": "",
            "MTU": str(mtu), "other_config": {}, "qos_algorithm_type": "",
            "qos_algorithm_params": {}}))
    return vm, vifs


def vif_port(s, vm, vif):
    return "vif%s.%s" % (s.VM.get_domid(vm), s.VIF.get_device(vif))


# ---- PIFs ----------------------------------------------------------------


def test_pifs_discovered_at_first_start(ovs, s):
    recs = s.PIF.get_all_records()
    devices = sorted(p["device"] for p in recs.values())
    assert devices == ovs.nics
    links = ovs.ns_ip("-o", "link", "show")
    for p in recs.values():
        assert p["physical"] is True
        assert p["MAC"] in links
        assert p["MTU"] == "1500"
        m = s.PIF_metrics.get_record(p["metrics"])
        assert m["carrier"] is True  # both ends of the veth are up
        bridge = s.network.get_bridge(p["network"])
        assert bridge == "xenbr%d" % ovs.nics.index(p["device"])


def test_pif_scan_finds_a_new_nic(ovs, s):
    ovs.ns_ip("link", "add", "xt9", "type", "veth", "peer", "name", "xt9p")
    host = s.host.get_all()[0]
    s.PIF.scan(host)
    # Not one of --nics: the host's NICs are what the option says.
    assert "xt9" not in [p["device"] for p in s.PIF.get_all_records().values()]


def test_pif_plug_makes_bridge_with_uplink(ovs, s):
    pif = pif_of(s, "xt0")
    s.PIF.plug(pif)
    assert "xenbr0" in ovs.bridges()
    assert "xt0" in ovs.ports("xenbr0")
    net = s.PIF.get_network(pif)
    ids = ovs.ext_ids("Bridge", "xenbr0")
    assert s.network.get_uuid(net) in ids["xs-network-uuids"].split(";")
    assert ids["xapid-owned"] == "true"
    assert s.PIF.get_MAC(pif) in ovs.get("Bridge", "xenbr0", "other_config")
    assert ovs.get("Bridge", "xenbr0", "datapath_type") == "netdev"


def test_reconfigure_ip_static_and_none(ovs, s):
    pif = pif_of(s, "xt0")
    s.PIF.plug(pif)  # the address goes on its bridge (plugged: idempotent)
    s.PIF.reconfigure_ip(pif, "Static", "10.77.0.5", "255.255.255.0",
                         "10.77.0.1", "10.77.0.1")
    # The address lives on the bridge, the device the PIF's traffic uses.
    out = ovs.wait_for(lambda: "10.77.0.5/24" in ovs.ns_ip(
        "-4", "addr", "show", "xenbr0") and ovs.ns_ip("-4", "addr", "show",
                                                       "xenbr0"),
        what="address on xenbr0")
    assert "10.77.0.5/24" in out
    assert "default via 10.77.0.1" in ovs.ns_ip("-4", "route")
    r = s.PIF.get_record(pif)
    assert (r["ip_configuration_mode"], r["IP"], r["netmask"],
            r["gateway"]) == ("Static", "10.77.0.5", "255.255.255.0",
                              "10.77.0.1")
    e = expect_error(s.PIF.reconfigure_ip, pif, "Static", "10.77.0.300",
                     "255.255.255.0", "", "")
    assert e.code == "INVALID_VALUE"
    e = expect_error(s.PIF.reconfigure_ip, pif, "Static", "10.77.0.6",
                     "255.0.255.0", "", "")
    assert e.code == "INVALID_VALUE"
    s.PIF.reconfigure_ip(pif, "None", "", "", "", "")
    assert "10.77.0.5" not in ovs.ns_ip("-4", "addr", "show", "xenbr0")
    assert s.PIF.get_ip_configuration_mode(pif) == "None"


def gone(pid):
    """Whether process 'pid' has exited (a zombie counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def live_child(dhcp_dir, parent):
    """The pid in xenbr0.pid when it is a live child of 'parent'."""
    try:
        with open(os.path.join(dhcp_dir, "xenbr0.pid")) as f:
            pid = int(f.read())
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ValueError):
        return None
    return pid if fields[0] != "Z" and int(fields[1]) == parent else None


def test_reconfigure_ip_dhcp(ovs, s, server):
    if not ovs_env._which("dhclient"):
        pytest.skip("dhclient is not installed (isc-dhcp-client)")
    if ovs.start_dhcp_server("xt0", "10.78.0.1", "10.78.0.50",
                             "10.78.0.60") is None:
        pytest.skip("dnsmasq is not installed")
    pif = pif_of(s, "xt0")
    s.PIF.plug(pif)  # the address goes on its bridge (plugged: idempotent)
    s.PIF.reconfigure_ip(pif, "DHCP", "", "", "", "")
    assert s.PIF.get_ip_configuration_mode(pif) == "DHCP"
    ip = ovs.wait_for(lambda: s.PIF.get_IP(pif), timeout=30,
                      what="a lease in PIF.IP")
    r = s.PIF.get_record(pif)
    assert ip.startswith("10.78.0.")
    assert 50 <= int(ip.rsplit(".", 1)[1]) <= 60
    assert (r["netmask"], r["gateway"], r["DNS"]) == \
        ("255.255.255.0", "10.78.0.1", "10.78.0.1")
    # On the bridge, with the default route through the router.
    assert "%s/24" % ip in ovs.ns_ip("-4", "addr", "show", "xenbr0")
    assert "default via 10.78.0.1 dev xenbr0" in ovs.ns_ip("-4", "route")
    # dhclient is xapid's child, its files under the state dir.
    dhcp_dir = os.path.join(server.state_dir, "dhcp")
    with open(os.path.join(dhcp_dir, "xenbr0.pid")) as f:
        pid = int(f.read())
    with open("/proc/%d/stat" % pid) as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == server.pid
    assert os.path.getsize(os.path.join(dhcp_dir, "xenbr0.leases")) > 0
    # Unplugged, the client stops and the address goes (an ifdown);
    # plugged again, a new client puts a lease back.
    s.PIF.unplug(pif)
    assert gone(pid), "dhclient still runs after PIF.unplug"
    assert "10.78.0." not in ovs.ns_ip("-4", "addr", "show", "xenbr0")
    assert s.PIF.get_IP(pif) == ""
    assert s.PIF.get_ip_configuration_mode(pif) == "DHCP"
    s.PIF.plug(pif)
    ip = ovs.wait_for(lambda: s.PIF.get_IP(pif), timeout=30,
                      what="a lease after PIF.plug")
    assert "%s/24" % ip in ovs.ns_ip("-4", "addr", "show", "xenbr0")
    # (the kept lease file may put the address back before the new client
    # has written its pid file: wait for the file to name a live child)
    pid = ovs.wait_for(lambda: live_child(dhcp_dir, server.pid), timeout=30,
                       what="a new dhclient, child of xapid")
    # Another mode stops the client and takes the address away.
    s.PIF.reconfigure_ip(pif, "None", "", "", "", "")
    assert gone(pid)
    assert "10.78.0." not in ovs.ns_ip("-4", "addr", "show", "xenbr0")
    assert s.PIF.get_IP(pif) == ""


# ---- VIF ports -----------------------------------------------------------


def test_vm_start_and_stop_plug_and_unplug_ports(ovs, s):
    net = new_network(s, "internal")
    bridge = s.network.get_bridge(net)
    assert bridge.startswith("xapi")
    assert bridge not in ovs.bridges()  # made when first needed
    vm, (vif,) = new_vm(s, "vm-a", [net])
    s.VM.start(vm, False, False)
    port = vif_port(s, vm, vif)
    assert bridge in ovs.bridges()
    assert port in ovs.ports(bridge)
    ids = ovs.ext_ids("Interface", port)
    assert ids["xs-vm-uuid"] == s.VM.get_uuid(vm)
    assert ids["xs-vif-uuid"] == s.VIF.get_uuid(vif)
    assert ids["xs-network-uuid"] == s.network.get_uuid(net)
    assert ids["attached-mac"] == s.VIF.get_MAC(vif)
    assert ids["iface-id"] == s.VIF.get_uuid(vif)
    assert ovs.get("Interface", port, "type") == "internal"
    assert s.network.get_uuid(net) in \
        ovs.ext_ids("Bridge", bridge)["xs-network-uuids"]

    s.VIF.unplug(vif)
    assert port not in ovs.ports(bridge)
    s.VIF.plug(vif)
    assert port in ovs.ports(bridge)

    s.VM.hard_shutdown(vm)
    assert port not in ovs.all_ports()


def test_vif_mtu(ovs, s):
    net = new_network(s, "jumbo", mtu=9000)
    vm, (vif,) = new_vm(s, "vm-mtu", [net])
    s.VM.start(vm, False, False)
    port = vif_port(s, vm, vif)
    assert ovs.get("Interface", port, "mtu_request") == "9000"
    s.VM.hard_shutdown(vm)


# ---- locking mode: OpenFlow rules, checked with ovs-ofctl and traced -------


def vif_cookie(s, vif):
    """The cookie xapid tags a VIF's rules with: "XA" and 48 bits of the
    VIF's uuid."""
    return "0x5841" + s.VIF.get_uuid(vif).replace("-", "")[:12]


def vif_flows(ovs, bridge, cookie):
    out = ovs.ofctl("dump-flows", bridge, "cookie=%s/-1" % cookie)
    return [line for line in out.splitlines() if "cookie=" in line]


def traced(ovs, bridge, port, pkt):
    """'drop' or 'forward': what the switch does with a frame from the
    VIF's port."""
    try:
        out = ovs.appctl("ofproto/trace", bridge,
                         "in_port=%s,%s" % (port, pkt))
    except subprocess.CalledProcessError as e:
        raise AssertionError(e.stderr + e.stdout)
    acts = [line for line in out.splitlines()
            if line.startswith("Datapath actions:")]
    assert acts, out
    return "drop" if acts[-1].split(":", 1)[1].strip() == "drop" \
        else "forward"


def test_vif_locking_rules(ovs, s):
    net = new_network(s, "locked net")
    bridge = s.network.get_bridge(net)
    vm, (vif, other) = new_vm(s, "vm-locked", [net, net])
    mac = s.VIF.get_MAC(vif)
    s.VIF.set_locking_mode(other, "unlocked")
    for bad, call in (("10.0.0.300", s.VIF.set_ipv4_allowed),
                      ("fd00::1", s.VIF.set_ipv4_allowed),
                      ("10.0.0.1", s.VIF.set_ipv6_allowed)):
        e = expect_error(call, vif, [bad])
        assert e.code == "INVALID_VALUE" and e.params[1] == bad, e
    e = expect_error(s.VIF.add_ipv6_allowed, vif, "nonsense")
    assert e.code == "INVALID_VALUE"
    s.VIF.set_ipv4_allowed(vif, ["10.9.0.5", "10.9.0.5"])
    assert s.VIF.get_ipv4_allowed(vif) == ["10.9.0.5"]
    s.VIF.add_ipv6_allowed(vif, "fd00::5")
    s.VIF.set_locking_mode(vif, "locked")
    s.VM.start(vm, False, False)
    port = vif_port(s, vm, vif)
    cookie = vif_cookie(s, vif)
    flows = vif_flows(ovs, bridge, cookie)
    ofport = ovs.get("Interface", port, "ofport")
    assert all("in_port=%s" % ofport in f for f in flows), flows
    assert any("priority=4000" in f and "actions=drop" in f for f in flows)
    assert any("nw_src=10.9.0.5" in f and "NORMAL" in f for f in flows)
    assert vif_flows(ovs, bridge, vif_cookie(s, other)) == []

    ip = "dl_src=%s,dl_dst=02:00:00:00:00:01,ip,nw_dst=10.9.0.1," % mac
    assert traced(ovs, bridge, port, ip + "nw_src=10.9.0.5") == "forward"
    assert traced(ovs, bridge, port, ip + "nw_src=10.9.0.99") == "drop"
    spoof = "dl_src=02:00:00:00:00:99,dl_dst=02:00:00:00:00:01,ip,"
    assert traced(ovs, bridge, port, spoof + "nw_src=10.9.0.5") == "drop"
    arp = "dl_src=%s,arp,arp_sha=%s," % (mac, mac)
    assert traced(ovs, bridge, port, arp + "arp_spa=10.9.0.5") == "forward"
    assert traced(ovs, bridge, port, arp + "arp_spa=10.9.0.7") == "drop"
    dhcp = ("udp,dl_src=%s,nw_src=0.0.0.0,nw_dst=255.255.255.255,"
            "udp_src=68,udp_dst=67" % mac)
    assert traced(ovs, bridge, port, dhcp) == "forward"
    v6 = "dl_src=%s,tcp6,ipv6_dst=fd00::1,ipv6_src=" % mac
    assert traced(ovs, bridge, port, v6 + "fd00::5") == "forward"
    assert traced(ovs, bridge, port, v6 + "fd00::6") == "drop"
    # The other VIF of the VM is unlocked: anything goes.
    oport = vif_port(s, vm, other)
    assert traced(ovs, bridge, oport, spoof + "nw_src=1.2.3.4") == "forward"

    # Changes on the running VIF replace its rules.
    s.VIF.add_ipv4_allowed(vif, "10.9.0.6")
    assert traced(ovs, bridge, port, ip + "nw_src=10.9.0.6") == "forward"
    s.VIF.remove_ipv4_allowed(vif, "10.9.0.5")
    assert traced(ovs, bridge, port, ip + "nw_src=10.9.0.5") == "drop"
    s.VIF.set_locking_mode(vif, "disabled")
    assert traced(ovs, bridge, port, ip + "nw_src=10.9.0.6") == "drop"
    assert len(vif_flows(ovs, bridge, cookie)) == 1
    s.VIF.set_locking_mode(vif, "unlocked")
    assert vif_flows(ovs, bridge, cookie) == []
    assert traced(ovs, bridge, port, spoof + "nw_src=1.2.3.4") == "forward"
    # network_default follows the network's default_locking_mode.
    s.VIF.set_locking_mode(vif, "network_default")
    s.network.set_default_locking_mode(net, "disabled")
    assert traced(ovs, bridge, port, ip + "nw_src=10.9.0.6") == "drop"
    assert traced(ovs, bridge, oport, ip + "nw_src=10.9.0.6") == "forward"
    s.network.set_default_locking_mode(net, "unlocked")
    assert vif_flows(ovs, bridge, cookie) == []
    # Unplugging removes the rules.
    s.VIF.set_locking_mode(vif, "locked")
    assert vif_flows(ovs, bridge, cookie) != []
    s.VIF.unplug(vif)
    assert vif_flows(ovs, bridge, cookie) == []
    s.VIF.plug(vif)
    assert vif_flows(ovs, bridge, cookie) != []
    s.VM.hard_shutdown(vm)
    assert vif_flows(ovs, bridge, cookie) == []


# ---- networks ------------------------------------------------------------


def test_network_bridge_names(ovs, s):
    a = new_network(s, "a")
    b = new_network(s, "b")
    na, nb = s.network.get_bridge(a), s.network.get_bridge(b)
    assert na != nb and na.startswith("xapi") and nb.startswith("xapi")
    mine = new_network(s, "mine", bridge="brtest0")
    assert s.network.get_bridge(mine) == "brtest0"
    e = expect_error(new_network, s, "dup", "brtest0")
    assert e.code == "BRIDGE_NAME_EXISTS"
    for bad in ("xenbr99", "xapi99", "vif1", "tap0", "eth7",
                "a-name-longer-than-15"):
        e = expect_error(new_network, s, "bad", bad)
        assert e.code == "INVALID_VALUE", bad
    s.network.destroy(mine)


def test_network_destroy_removes_bridge(ovs, s):
    net = new_network(s, "short-lived")
    vm, (vif,) = new_vm(s, "vm-tmp", [net])
    s.VM.start(vm, False, False)
    bridge = s.network.get_bridge(net)
    assert bridge in ovs.bridges()
    e = expect_error(s.network.destroy, net)
    assert e.code == "NETWORK_CONTAINS_VIF"
    s.VM.hard_shutdown(vm)
    s.VIF.destroy(vif)
    s.network.destroy(net)
    ovs.wait_for(lambda: bridge not in ovs.bridges(), what="bridge removed")
    e = expect_error(s.network.destroy, pif_network(s, "xt0"))
    assert e.code == "NETWORK_CONTAINS_PIF"


def pif_network(s, device):
    return s.PIF.get_network(pif_of(s, device))


# ---- VLANs ---------------------------------------------------------------


def test_vlan_fake_bridge_and_tagged_vif(ovs, s):
    pif = pif_of(s, "xt0")
    net = new_network(s, "vlan 42")
    for bad in (-1, 4095, 5000):
        e = expect_error(s.VLAN.create, pif, str(bad), net)
        assert e.code == "VLAN_TAG_INVALID"
    vlan = s.VLAN.create(pif, "42", net)
    fake = s.network.get_bridge(net)
    assert ovs.vsctl("br-to-parent", fake) == "xenbr0"
    assert ovs.vsctl("br-to-vlan", fake) == "42"
    untagged = s.VLAN.get_untagged_PIF(vlan)
    assert s.PIF.get_VLAN(untagged) == "42"
    assert s.PIF.get_device(untagged) == "xt0"
    assert s.VLAN.get_tagged_PIF(vlan) == pif
    # xs-network-uuids of the parent names the VLAN network too.
    assert s.network.get_uuid(net) in \
        ovs.ext_ids("Bridge", "xenbr0")["xs-network-uuids"]
    e = expect_error(s.VLAN.create, pif, "42", new_network(s, "again"))
    assert e.code == "PIF_VLAN_EXISTS"

    vm, (vif,) = new_vm(s, "vm-vlan", [net])
    s.VM.start(vm, False, False)
    port = vif_port(s, vm, vif)
    # On xenbr0 with the VLAN's tag, which ovs-vsctl shows as a port of
    # the fake bridge.
    assert ovs.get("Port", port, "tag") == "42"
    assert port in ovs.ports(fake)
    assert ovs.vsctl("br-to-parent", ovs.vsctl("port-to-br", port)) == \
        "xenbr0"
    s.VM.hard_shutdown(vm)

    s.VLAN.destroy(vlan)
    ovs.wait_for(lambda: fake not in ovs.bridges(), what="fake bridge gone")
    assert not s.PIF.get_all_records().get(untagged)


# ---- bonds ---------------------------------------------------------------


@pytest.mark.parametrize("mode,ovs_mode", [("active-backup", "active-backup"),
                                           ("balance-slb", "balance-slb"),
                                           ("lacp", "balance-tcp")])
def test_bond_modes(ovs, s, mode, ovs_mode):
    members = [pif_of(s, "xt1"), pif_of(s, "xt2")]
    e = expect_error(s.Bond.create, new_network(s, "x"), members[:1], "",
                     mode, {})
    assert e.code == "PIF_BOND_NEEDS_MORE_MEMBERS"
    for p in members:
        s.PIF.plug(p)
    assert "xt1" in ovs.ports("xenbr1")
    net = new_network(s, "bond " + mode)
    bond = s.Bond.create(net, members, "", mode, {})
    master = s.Bond.get_master(bond)
    dev = s.PIF.get_device(master)
    bridge = s.network.get_bridge(net)
    assert dev.startswith("bond")
    assert dev in ovs.ports(bridge)
    ifaces = ovs.vsctl("--format=csv", "--no-headings", "--columns=name",
                       "list", "Interface")
    assert "xt1" in ifaces and "xt2" in ifaces
    assert ovs.get("Port", dev, "bond_mode") == ovs_mode
    if mode == "lacp":
        assert ovs.get("Port", dev, "lacp") == "active"
    assert "xt1" not in ovs.ports("xenbr1")  # a member leaves its bridge
    assert sorted(s.Bond.get_slaves(bond)) == sorted(members)
    e = expect_error(s.Bond.create, new_network(s, "y"), members, "", mode,
                     {})
    assert e.code == "PIF_ALREADY_BONDED"
    s.Bond.destroy(bond)
    ovs.wait_for(lambda: "xt1" in ovs.ports("xenbr1"), what="xt1 back")
    assert dev not in ovs.all_ports()


# ---- tunnels --------------------------------------------------------------


def test_tunnels(ovs, s):
    pif = pif_of(s, "xt0")
    net = new_network(s, "over gre")
    e = expect_error(s.tunnel.create, pif, net, "gre")
    assert e.details == ["TRANSPORT_PIF_NOT_CONFIGURED", pif]
    s.PIF.reconfigure_ip(pif, "Static", "10.79.0.5", "255.255.255.0", "", "")
    tun = s.tunnel.create(pif, net, "gre")
    access = s.tunnel.get_access_PIF(tun)
    assert s.tunnel.get_transport_PIF(tun) == pif
    assert s.tunnel.get_protocol(tun) == "gre"
    dev = s.PIF.get_device(access)
    assert dev == "tunnel0"
    assert s.PIF.get_network(access) == net
    assert s.PIF.get_physical(access) is False
    assert s.PIF.get_tunnel_access_PIF_of(access) == [tun]
    assert s.PIF.get_tunnel_transport_PIF_of(pif) == [tun]
    bridge = s.network.get_bridge(net)
    assert dev in ovs.ports(bridge)
    assert ovs.get("Interface", dev, "type") == "gre"
    assert ovs.get("Interface", dev, "options") == \
        '{key=flow, remote_ip=flow}'
    e = expect_error(s.tunnel.create, access, new_network(s, "t2"), "gre")
    assert e.details == ["IS_TUNNEL_ACCESS_PIF", access]
    e = expect_error(s.tunnel.create, pif, net, "gre")
    assert e.code == "NETWORK_ALREADY_CONNECTED"

    net2 = new_network(s, "over vxlan")
    tun2 = s.tunnel.create(pif, net2, "vxlan")
    dev2 = s.PIF.get_device(s.tunnel.get_access_PIF(tun2))
    bridge2 = s.network.get_bridge(net2)
    assert dev2 == "tunnel1" and dev2 in ovs.ports(bridge2)
    assert ovs.get("Interface", dev2, "type") == "vxlan"
    # A fixed remote end from other_config, at the next convergence.
    s.tunnel.set_other_config(tun2, {"remote_ip": "10.79.0.9", "key": "77"})
    s.network.set_default_locking_mode(net2, "unlocked")  # converges
    assert ovs.get("Interface", dev2, "options") == \
        '{key="77", remote_ip="10.79.0.9"}'
    # VIFs on a tunnel network land on its bridge, beside the tunnel.
    vm, (vif,) = new_vm(s, "vm-tunnel", [net2])
    s.VM.start(vm, False, False)
    assert vif_port(s, vm, vif) in ovs.ports(bridge2)
    s.VM.hard_shutdown(vm)

    s.tunnel.destroy(tun)
    s.tunnel.destroy(tun2)
    ovs.wait_for(lambda: dev not in ovs.all_ports() and
                 dev2 not in ovs.all_ports(), what="tunnel ports gone")
    assert access not in s.PIF.get_all()
    assert s.PIF.get_tunnel_transport_PIF_of(pif) == []
    s.PIF.reconfigure_ip(pif, "None", "", "", "", "")


# ---- restarts ------------------------------------------------------------


def test_ovsdb_down_gives_clear_errors_then_converges(ovs, s, server):
    net = new_network(s, "survivor")
    vm, (vif,) = new_vm(s, "vm-survivor", [net])
    s.VIF.set_locking_mode(vif, "disabled")
    s.VM.start(vm, False, False)
    port = vif_port(s, vm, vif)
    bridge = s.network.get_bridge(net)
    assert port in ovs.ports(bridge)
    cookie = vif_cookie(s, vif)
    assert len(vif_flows(ovs, bridge, cookie)) == 1

    ovs.stop_ovsdb()
    t0 = time.monotonic()
    e = expect_error(s.VIF.unplug, vif)
    assert e.code == "INTERNAL_ERROR" and "Open vSwitch" in e.params[0], e
    vm2, _ = new_vm(s, "vm-blocked", [net])
    e = expect_error(s.VM.start, vm2, False, False)
    assert "Open vSwitch" in " ".join(e.details)
    assert s.VM.get_power_state(vm2) == "Halted"
    e = expect_error(s.PIF.plug, pif_of(s, "xt0"))
    assert "Open vSwitch" in " ".join(e.details)
    assert time.monotonic() - t0 < 20  # answers, never hangs

    # Back with an empty database: xapid notices and replays everything.
    ovs.start_ovsdb(fresh=True)
    ovs.wait_for(lambda: port in ovs.all_ports(), timeout=20,
                 what="VIF port back after ovsdb restart")
    assert port in ovs.ports(bridge)
    assert "xt0" in ovs.ports("xenbr0")
    assert ovs.ext_ids("Interface", port)["xs-vif-uuid"] == \
        s.VIF.get_uuid(vif)
    # The bridge was made anew: its rules too, on the port's new number.
    ovs.wait_for(lambda: vif_flows(ovs, bridge, cookie), what="rules back")
    assert "in_port=%s" % ovs.get("Interface", port, "ofport") in \
        vif_flows(ovs, bridge, cookie)[0]
    s.VIF.unplug(vif)  # and the API works again
    s.VIF.plug(vif)


@pytest.mark.parametrize("crash", [True, False], ids=["crash", "stop"])
def test_vswitchd_restart_puts_rules_back(ovs, s, crash):
    """ovs-vswitchd alone restarts (a crash, an upgrade): the bridges and
    ports come back from ovsdb-server, the locking rules only from xapid,
    which notices by itself and leaves the unchanged ports alone."""
    net = new_network(s, "vswitchd restart")
    bridge = s.network.get_bridge(net)
    vm, (vif, off) = new_vm(s, "vm-vswitchd", [net, net])
    s.VIF.set_ipv4_allowed(vif, ["10.8.0.5"])
    s.VIF.set_locking_mode(vif, "locked")
    s.VIF.set_locking_mode(off, "disabled")
    s.VM.start(vm, False, False)
    port, oport = vif_port(s, vm, vif), vif_port(s, vm, off)
    cookie, ocookie = vif_cookie(s, vif), vif_cookie(s, off)
    mac, omac = s.VIF.get_MAC(vif), s.VIF.get_MAC(off)
    to = "dl_dst=02:00:00:00:00:01,ip,nw_dst=10.8.0.1,nw_src=10.8.0.5"
    good = "dl_src=%s,%s" % (mac, to)
    spoofed = "dl_src=02:00:00:00:00:99,%s" % to
    from_off = "dl_src=%s,%s" % (omac, to)

    def as_locked():
        assert traced(ovs, bridge, port, good) == "forward"
        assert traced(ovs, bridge, port, spoofed) == "drop"
        assert traced(ovs, bridge, oport, from_off) == "drop"

    as_locked()
    uuids = {p: ovs.get("Port", p, "_uuid") for p in (port, oport)}
    pid = ovs.vswitchd.pid
    ovs.restart_vswitchd(crash=crash)
    assert ovs.vswitchd.pid != pid

    def rules_back():
        """The rules of both VIFs, each on its port's number in the new
        switch (which may differ from the old one's)."""
        for p, c in ((port, cookie), (oport, ocookie)):
            on_port = re.compile(
                r"\bin_port=%s\b" % ovs.get("Interface", p, "ofport"))
            flows = vif_flows(ovs, bridge, c)
            if not flows or not all(on_port.search(f) for f in flows):
                return False
        return True

    ovs.wait_for(rules_back, timeout=20,
                 what="locking rules back after ovs-vswitchd restarted")
    as_locked()
    # Converging again did not replace the ports (same rows).
    assert {p: ovs.get("Port", p, "_uuid") for p in uuids} == uuids
    s.VM.hard_shutdown(vm)
    assert not vif_flows(ovs, bridge, cookie)
    assert not vif_flows(ovs, bridge, ocookie)


def test_xapid_restart_converges(ovs, server):
    s = server.login()
    vm = next(r for r, v in s.VM.get_all_records().items()
              if v["name_label"] == "vm-survivor")
    vif = s.VM.get_VIFs(vm)[0]
    port = vif_port(s, vm, vif)
    bridge = s.network.get_bridge(s.VIF.get_network(vif))
    cookie = vif_cookie(s, vif)
    assert vif_flows(ovs, bridge, cookie)
    server.stop_clean()
    # Behind xapid's back: a port it owns goes (the uplink), a stale port
    # of its appears, and a port it does not own is added (must survive).
    ovs.vsctl("del-port", "xenbr0", "xt0")
    ovs.vsctl("add-port", bridge, "stale0", "--", "set", "Interface",
              "stale0", "type=internal", "--", "set", "Port", "stale0",
              "external_ids:xapid-owned=true")
    ovs.vsctl("add-port", bridge, "foreign0", "--", "set", "Interface",
              "foreign0", "type=internal")
    server.start()
    s = server.login()
    # The simulated hypervisor's domains die with xapid: the VM comes back
    # Halted, so its port must go too.
    assert s.VM.get_power_state(vm) == "Halted"
    ovs.wait_for(lambda: "xt0" in ovs.ports("xenbr0") and
                 "stale0" not in ovs.ports(bridge) and
                 port not in ovs.all_ports() and
                 not vif_flows(ovs, bridge, cookie), timeout=20,
                 what="convergence after restart")
    assert "foreign0" in ovs.ports(bridge)
    s.VM.start(vm, False, False)
    port = vif_port(s, vm, vif)
    assert port in ovs.ports(bridge)
    assert len(vif_flows(ovs, bridge, cookie)) == 1
    s.VM.hard_shutdown(vm)
    assert port not in ovs.all_ports()
    assert not vif_flows(ovs, bridge, cookie)


def test_dhcp_client_comes_back_with_xapid(ovs, server):
    """A DHCP PIF keeps its client across a restart of xapid: the new
    xapid starts dhclient again (its own child) and keeps the lease."""
    if not ovs_env._which("dhclient") or not ovs_env._which("dnsmasq"):
        pytest.skip("dhclient or dnsmasq is not installed")
    s = server.login()
    pif = pif_of(s, "xt0")
    dhcp_dir = os.path.join(server.state_dir, "dhcp")
    pid_file = os.path.join(dhcp_dir, "xenbr0.pid")
    # test_reconfigure_ip_dhcp left dnsmasq serving on xt0's peer
    s.PIF.reconfigure_ip(pif, "DHCP", "", "", "", "")
    ovs.wait_for(lambda: s.PIF.get_IP(pif), timeout=30, what="a lease")
    server.stop_clean()
    server.start()
    s = server.login()

    def client_of_new_xapid():
        try:
            with open(pid_file) as f:
                pid = int(f.read())
            with open("/proc/%d/stat" % pid) as f:
                return int(f.read().rsplit(")", 1)[1].split()[1]) == \
                    server.pid
        except (OSError, ValueError):
            return False
    ovs.wait_for(client_of_new_xapid, timeout=30,
                 what="dhclient restarted by the new xapid")
    ip = ovs.wait_for(lambda: s.PIF.get_IP(pif), timeout=30,
                      what="the lease recorded again")
    assert "%s/24" % ip in ovs.ns_ip("-4", "addr", "show", "xenbr0")
    s.PIF.reconfigure_ip(pif, "None", "", "", "", "")
    assert s.PIF.get_IP(pif) == ""
