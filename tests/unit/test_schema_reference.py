"""The schema against xapi's published datamodel (API 2.23).

Generates the message table from api-schema/ with xagen and compares every
public message - name, parameter types and names, result type, allowed
roles - with ../shared/reference/xenapi.json.  Skips (exit 77 through
pytest's skip) when the reference file is not beside the checkout."""
import json
import os
import subprocess
import sys

import pytest

SRC = os.environ.get("XA_SOURCE_DIR",
                     os.path.join(os.path.dirname(__file__), "..", ".."))
ROLE_BITS = {"pool-admin": 0, "pool-operator": 1, "vm-power-admin": 2,
             "vm-admin": 3, "vm-operator": 4, "read-only": 5,
             "client-cert": 6}


def reference_path():
    for p in (os.path.join(SRC, "..", "shared", "reference", "xenapi.json"),
              "/work/shared/reference/xenapi.json"):
        if os.path.exists(p):
            return p
    return None


@pytest.fixture(scope="module")
def ours():
    out = subprocess.run(
        [sys.executable, os.path.join(SRC, "api-schema/codegen/xagen.py"),
         "--schema", os.path.join(SRC, "api-schema"), "--out", "/tmp",
         "--dump-json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def reference():
    path = reference_path()
    if not path:
        pytest.skip("shared/reference/xenapi.json is not present")
    ref = {}
    for c in json.load(open(path)):
        for m in c["messages"]:
            ref[c["name"] + "." + m["name"]] = m
    return ref


def test_public_message_count(ours):
    assert sum(1 for m in ours.values() if not m["hidden"]) == 1828


def test_same_messages(ours, reference):
    public = {k for k, m in ours.items() if not m["hidden"]}
    assert public == set(reference)


def test_signatures(ours, reference):
    bad = []
    for name, r in reference.items():
        m = ours[name]
        params = [[p["type"], p["name"]] for p in r["params"]]
        if m["session"]:
            params = params[1:]
        if params != m["params"]:
            bad.append((name, "params", params, m["params"]))
        if r["result"][0] != m["result"]:
            bad.append((name, "result", r["result"][0], m["result"]))
        mask = 0
        for role in r["roles"]:
            mask |= 1 << ROLE_BITS[role]
        if mask != m["roles"]:
            bad.append((name, "roles", r["roles"], m["roles"]))
        errs = [e["name"] for e in r["errors"]]
        if not m["implicit"] and errs != m["errors"]:
            bad.append((name, "errors", errs, m["errors"]))
    assert not bad, bad[:10]


def test_defaults_only_trail():
    """A defaulted parameter may only be followed by defaulted ones."""
    for path in os.listdir(os.path.join(SRC, "api-schema", "classes")):
        doc = json.load(open(os.path.join(SRC, "api-schema", "classes",
                                          path)))
        for m in doc["messages"]:
            seen_default = False
            for p in m["params"]:
                if len(p) > 2:
                    seen_default = True
                else:
                    assert not seen_default, (doc["class"], m["name"])
