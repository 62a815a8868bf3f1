#!/usr/bin/env python3
"""Seed api-schema/ from xapi's published datamodel dump (xenapi.json).

This was run once to create api-schema/classes/*.json, enums.json and
errors.json; since then those files are the source of truth and are edited
by hand.  It keeps only facts (names, types, qualifiers, defaults,
signatures, error codes, roles) and none of the reference's prose.  Kept so
that a later API version can be diffed in the same way.

Usage: seed_from_reference.py XENAPI_JSON API_SCHEMA_DIR
"""
import json
import re
import os
import sys

ROLE_ORDER = ["pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
              "vm-operator", "read-only"]

# Set fields that the database computes from a ref field of another class,
# where the pairing is not unique by type alone.
AMBIGUOUS_RELATIONS = {
    ("task", "subtasks"): ("task", "subtask_of"),
    ("VM", "snapshots"): ("VM", "snapshot_of"),
    ("VM", "children"): ("VM", "parent"),
    ("VM", "VTPMs"): ("VTPM", "VM"),
    ("host", "resident_VMs"): ("VM", "resident_on"),
    ("PIF", "bond_master_of"): ("Bond", "master"),
    ("PIF", "VLAN_slave_of"): ("VLAN", "tagged_PIF"),
    ("PIF", "tunnel_access_PIF_of"): ("tunnel", "access_PIF"),
    ("PIF", "tunnel_transport_PIF_of"): ("tunnel", "transport_PIF"),
    ("PIF", "sriov_physical_PIF_of"): ("network_sriov", "physical_PIF"),
    ("PIF", "sriov_logical_PIF_of"): ("network_sriov", "logical_PIF"),
    ("VDI", "snapshots"): ("VDI", "snapshot_of"),
    ("PGPU", "resident_VGPUs"): ("VGPU", "resident_on"),
}


def encode_roles(roles):
    """Our compact spelling of a role list: the least privileged role that
    may call, plus '+client-cert' when that internal role may too."""
    if not roles:
        return "none"
    base = [r for r in roles if r != "client-cert"]
    least = base[-1]
    assert base == ROLE_ORDER[:ROLE_ORDER.index(least) + 1], roles
    if least == "read-only":
        assert "client-cert" in roles
        return "read-only"
    return least + ("+client-cert" if "client-cert" in roles else "")


def field_prefix(name):
    for p in ("set_", "add_to_", "remove_from_", "add_", "remove_", "get_"):
        if name.startswith(p):
            return p, name[len(p):]
    return None, name


def main():
    ref = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    classes = {c["name"]: c for c in ref}
    enums = {}
    errors = set()
    os.makedirs(os.path.join(out, "classes"), exist_ok=True)
    for c in ref:
        msgs = c["messages"]
        implicit = [m for m in msgs if m["implicit"]]
        names = {m["name"] for m in implicit}
        flags = []
        if "create" in names:
            flags.append("create")
        if "destroy" in names:
            flags.append("destroy")
        if "get_all" in names:
            flags.append("get_all")
        if "get_record" in names:
            flags.append("getters")
        if "get_by_name_label" in names:
            flags.append("by_name")
        roles_of = {m["name"]: encode_roles(m["roles"]) for m in implicit}
        # The most common writer role becomes the class default.
        writes = [r for n, r in roles_of.items()
                  if field_prefix(n)[0] not in (None, "get_")]
        write_default = max(set(writes), key=writes.count) if writes else None
        fields = []
        for f in c["fields"]:
            fd = {"name": f["name"], "type": f["type"],
                  "qualifier": f["qualifier"]}
            if "default" in f:
                fd["default"] = json_default(f["type"], f["default"])
            g = roles_of.get("get_" + f["name"])
            if g and g != "read-only":
                fd["read_roles"] = g
            for p in ("set_", "add_to_", "remove_from_", "add_", "remove_"):
                w = roles_of.get(p + f["name"])
                if w and w != write_default:
                    fd["write_roles"] = w
            rel = relation_of(classes, c["name"], f)
            if rel:
                fd["computed_from"] = rel
            fields.append(fd)
        for e in c["enums"]:
            enums[e["name"]] = [v["name"] for v in e["values"]]
        explicit = []
        for m in msgs:
            for e in m["errors"]:
                errors.add(e["name"])
            if m["implicit"]:
                continue
            params = m["params"]
            session = bool(params) and params[0]["type"] == "session ref" \
                and params[0]["name"] == "session_id"
            if session:
                params = params[1:]
            md = {"name": m["name"],
                  "params": [[p["type"], p["name"]] for p in params],
                  "result": m["result"][0],
                  "roles": encode_roles(m["roles"]),
                  "errors": [e["name"] for e in m["errors"]]}
            if not session:
                md["session"] = False
            explicit.append(md)
        doc = {"class": c["name"], "implicit": flags}
        if "create" in names:
            doc["create_roles"] = roles_of["create"]
        if "destroy" in names:
            doc["destroy_roles"] = roles_of["destroy"]
        if write_default:
            doc["write_roles"] = write_default
        doc["fields"] = fields
        doc["messages"] = explicit
        write_json(os.path.join(out, "classes", c["name"] + ".json"), doc)
    write_json(os.path.join(out, "enums.json"), dict(sorted(enums.items())))
    errs_path = os.path.join(out, "errors.json")
    existing = json.load(open(errs_path)) if os.path.exists(errs_path) else {}
    for e in errors:
        existing.setdefault(e, [])
    write_json(errs_path, dict(sorted(existing.items())))


def json_default(t, text):
    """The reference spells defaults in OCaml-ish text ("{}", "0.", "Null",
    {"k" -> "v"}); the schema keeps them as JSON values of the field's type."""
    if t.endswith(" map"):
        pairs = re.findall(r'"([^"]*)" -> "([^"]*)"', text)
        return dict(pairs)
    if t.endswith(" set"):
        inner = text.strip("{}").strip()
        items = [x.strip() for x in inner.split(";") if x.strip()] if inner else []
        if t.startswith("int"):
            return [int(x) for x in items]
        return items
    if t.endswith(" ref"):
        return "OpaqueRef:NULL" if text in ("Null", "OpaqueRef:NULL") else text
    if t == "bool":
        return text == "true"
    if t == "int":
        return int(text)
    if t == "float":
        return float(text)
    if t == "string":
        return json.loads(text)
    return text


def relation_of(classes, cname, f):
    t = f["type"]
    if not t.endswith(" ref set") or f["qualifier"] != "RO/runtime":
        return None
    other = t[:-len(" ref set")]
    if (cname, f["name"]) in AMBIGUOUS_RELATIONS:
        oc, of = AMBIGUOUS_RELATIONS[(cname, f["name"])]
        return oc + "." + of
    if other not in classes:
        return None
    cands = [g["name"] for g in classes[other]["fields"]
             if g["type"] == cname + " ref"]
    if len(cands) == 1:
        return other + "." + cands[0]
    return None


def write_json(path, doc):
    """One entry per line for lists of records, so diffs stay readable."""
    with open(path, "w") as fh:
        if isinstance(doc, dict) and "fields" in doc:
            fh.write("{\n")
            keys = list(doc.keys())
            for i, k in enumerate(keys):
                v = doc[k]
                sep = "," if i < len(keys) - 1 else ""
                if isinstance(v, list) and v and isinstance(v[0], dict):
                    fh.write('  "%s": [\n' % k)
                    for j, item in enumerate(v):
                        s = "," if j < len(v) - 1 else ""
                        fh.write("    " + json.dumps(item) + s + "\n")
                    fh.write("  ]" + sep + "\n")
                else:
                    fh.write('  "%s": %s%s\n' % (k, json.dumps(v), sep))
            fh.write("}\n")
        else:
            fh.write("{\n")
            items = list(doc.items())
            for i, (k, v) in enumerate(items):
                s = "," if i < len(items) - 1 else ""
                fh.write("  %s: %s%s\n" % (json.dumps(k), json.dumps(v), s))
            fh.write("}\n")


if __name__ == "__main__":
    main()
