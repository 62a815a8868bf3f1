"""The role and subject messages: permissions come from the schema, the
same table dispatch enforces."""

import json
import os
import subprocess
import sys

from xapilib import expect_error

SRC = os.environ.get("XA_SOURCE_DIR",
                     os.path.join(os.path.dirname(__file__), "..", ".."))


def schema_roles():
    out = subprocess.run(
        [sys.executable, os.path.join(SRC, "api-schema/codegen/xagen.py"),
         "--schema", os.path.join(SRC, "api-schema"), "--out", "/tmp",
         "--dump-json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def roles_by_name(s):
    return {s.role.get_name_label(r): r for r in s.role.get_all()}


def test_permissions_follow_the_schema(xapid, session):
    msgs = schema_roles()
    roles = roles_by_name(session)
    bits = {"pool-admin": 0, "pool-operator": 1, "vm-power-admin": 2,
            "vm-admin": 3, "vm-operator": 4, "read-only": 5}
    for name, bit in bits.items():
        got = set(session.role.get_permissions_name_label(roles[name]))
        want = {w.lower() for w, m in msgs.items()
                if not m["hidden"] and m["session"] and m["roles"] >> bit & 1}
        assert got == want, name
    # a read-only role cannot start VMs; an operator can
    ro = set(session.role.get_permissions_name_label(roles["read-only"]))
    op = set(session.role.get_permissions_name_label(roles["vm-operator"]))
    assert "vm.start" not in ro and "vm.start" in op
    assert "vm.get_record" in ro


def test_roles_holding_a_permission(xapid, session):
    roles = roles_by_name(session)
    holders = set(session.role.get_by_permission_name_label("vm.start"))
    assert holders == {roles[n] for n in ("pool-admin", "pool-operator",
                                          "vm-power-admin", "vm-admin",
                                          "vm-operator")}
    assert session.role.get_by_permission_name_label("no.such") == []


def test_subject_roles(xapid, session):
    roles = roles_by_name(session)
    subj = session.subject.create({"subject_identifier": "S-1-5-21-42",
                                   "other_config": {}})
    # a new subject holds pool-admin by default, as in xapi
    assert session.subject.get_roles(subj) == [roles["pool-admin"]]
    session.subject.remove_from_roles(subj, roles["pool-admin"])
    session.subject.add_to_roles(subj, roles["read-only"])
    assert session.subject.get_roles(subj) == [roles["read-only"]]
    e = expect_error(session.subject.add_to_roles, subj, roles["read-only"])
    assert e.details == ["ROLE_ALREADY_EXISTS"]
    e = expect_error(session.subject.remove_from_roles, subj,
                     roles["vm-admin"])
    assert e.details == ["ROLE_NOT_FOUND"]
    perms = session.subject.get_permissions_name_label(subj)
    assert "vm.get_record" in perms and "vm.start" not in perms
    session.subject.destroy(subj)
