"""What a fresh xapid holds after its first start, and what a restart
keeps: one pool, this host (with the machine's facts), dom0, roles and
the default templates."""

import os
import socket

import pytest

import xapilib

TEMPLATES_WITH_DISKS = [
    "Debian Bookworm 12",
    "Debian Bullseye 11",
    "Ubuntu Jammy Jellyfish 22.04",
    "CentOS Stream 9",
    "Windows Server 2022 (64-bit)",
]
ROLES = ["pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
         "vm-operator", "read-only"]


def meminfo_total():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def cpu_count():
    n = 0
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("processor"):
                n += 1
    return n or os.cpu_count()


@pytest.fixture(scope="module")
def world(xapid, session):
    return {
        "pools": session.pool.get_all_records(),
        "hosts": session.host.get_all_records(),
        "vms": session.VM.get_all_records(),
    }


def test_one_pool_master_is_only_host(world):
    assert len(world["pools"]) == 1
    assert len(world["hosts"]) == 1
    pool = list(world["pools"].values())[0]
    assert pool["master"] == list(world["hosts"])[0]


def test_host_facts(session, world):
    ref, h = list(world["hosts"].items())[0]
    assert h["API_version_major"] == "2"
    assert h["API_version_minor"] == "23"
    assert h["API_version_vendor"] == "XenSource"
    assert h["hostname"] == socket.gethostname()
    assert h["enabled"] is True
    assert h["address"] == "127.0.0.1"
    assert h["software_version"].get("xapi")
    m = session.host_metrics.get_record(h["metrics"])
    assert int(m["memory_total"]) == meminfo_total()
    assert m["live"] is True
    assert 0 < int(m["memory_free"]) <= int(m["memory_total"])
    cpus = h["host_CPUs"]
    assert len(cpus) == cpu_count() == os.cpu_count()
    numbers = sorted(int(session.host_cpu.get_number(c)) for c in cpus)
    assert numbers == list(range(len(cpus)))
    for c in cpus:
        assert session.host_cpu.get_host(c) == ref


def test_control_domain(session, world):
    host_ref, h = list(world["hosts"].items())[0]
    dom0s = {r: v for r, v in world["vms"].items() if v["is_control_domain"]}
    assert len(dom0s) == 1
    ref, d = list(dom0s.items())[0]
    assert h["control_domain"] == ref
    assert d["power_state"] == "Running"
    assert d["resident_on"] == host_ref
    assert d["is_a_template"] is False
    assert ref in h["resident_VMs"]
    assert d["name_label"] == "Control domain on host: " + h["hostname"]
    assert d["metrics"] != "OpaqueRef:NULL"
    assert session.VM_metrics.get_record(d["metrics"])


def test_templates(session, world):
    by_name = {}
    for r, v in world["vms"].items():
        by_name.setdefault(v["name_label"], []).append((r, v))
    for name in TEMPLATES_WITH_DISKS + ["Other install media"]:
        assert len(by_name.get(name, [])) == 1, name
        r, v = by_name[name][0]
        assert v["is_a_template"] is True, name
        assert v["is_default_template"] is True, name
        assert v["power_state"] == "Halted"
        assert session.VM.get_by_name_label(name) == [r]
    for name in TEMPLATES_WITH_DISKS:
        disks = by_name[name][0][1]["other_config"].get("disks", "")
        assert disks.startswith("<provision><disk "), (name, disks)


def test_roles(session):
    recs = session.role.get_all_records()
    names = sorted(v["name_label"] for v in recs.values())
    assert names == sorted(ROLES)
    for name in ROLES:
        assert len(session.role.get_by_name_label(name)) == 1


def test_restart_keeps_identity(xapid_factory):
    x = xapid_factory.start()
    s = x.login()
    host = s.host.get_all()[0]
    host_uuid = s.host.get_uuid(host)
    pool_uuid = s.pool.get_uuid(s.pool.get_all()[0])
    vms = s.VM.get_all_records()
    names = sorted(v["name_label"] for v in vms.values())
    n_cpus = len(s.host_cpu.get_all())
    s.host.set_name_description(host, "kept")
    x.restart()
    s = x.login()
    assert len(s.pool.get_all()) == 1 and len(s.host.get_all()) == 1
    host2 = s.host.get_all()[0]
    assert s.host.get_uuid(host2) == host_uuid
    assert s.pool.get_uuid(s.pool.get_all()[0]) == pool_uuid
    assert s.pool.get_master(s.pool.get_all()[0]) == host2
    assert s.host.get_name_description(host2) == "kept"
    vms2 = s.VM.get_all_records()
    assert sorted(v["name_label"] for v in vms2.values()) == names
    assert sorted(v["uuid"] for v in vms2.values()) == \
        sorted(v["uuid"] for v in vms.values())
    assert len(s.host_cpu.get_all()) == n_cpus
    assert len(s.role.get_all()) == len(ROLES)
    # the root password file is only read on the first start: the same
    # password still works
    assert x.login().pool.get_all()


def test_password_file_only_read_first(xapid_factory):
    x = xapid_factory.start()
    old = x.password
    with open(x.password_file, "w") as f:
        f.write("changed-afterwards\n")
    x.restart()
    assert x.login(password=old).pool.get_all()
    e = xapilib.expect_error(x.api().call, "session.login_with_password",
                             "root", "changed-afterwards")
    assert e.code == "SESSION_AUTHENTICATION_FAILED"
