#!/usr/bin/env python3
"""xagen: turn api-schema/ into C tables, dispatch thunks, the prototypes
hand-written code must provide, the C client library and the API docs.

Python 3 standard library only.  Run by CMake at build time; its outputs
land in the build tree and are never committed.

Usage: xagen.py --schema DIR --out DIR
"""
import argparse
import glob
import json
import os
import re
import sys

ROLE_ORDER = ["pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
              "vm-operator", "read-only"]
ROLE_BITS = {"pool-admin": 0, "pool-operator": 1, "vm-power-admin": 2,
             "vm-admin": 3, "vm-operator": 4, "read-only": 5,
             "client-cert": 6}
QUALIFIERS = {"RW": "XA_Q_RW", "RO/constructor": "XA_Q_RO_CONSTRUCTOR",
              "RO/runtime": "XA_Q_RO_RUNTIME"}


# Explicit messages marked "generic" in a class file: what serves them.
GENERIC_KINDS = {
    "get_record": "XA_MSG_GET_RECORD",
    "get_by_uuid": "XA_MSG_GET_BY_UUID",
    "get_all": "XA_MSG_GET_ALL",
    "get_all_records": "XA_MSG_GET_ALL_RECORDS",
    "get_all_records_where": "XA_MSG_GET_ALL_RECORDS_WHERE",
    "destroy": "XA_MSG_DESTROY",
}


def fail(msg):
    sys.stderr.write("xagen: %s\n" % msg)
    sys.exit(1)


def roles_mask(spec):
    """'vm-admin' -> every role at least as privileged; '+client-cert'
    adds the internal certificate role; 'read-only' means everyone."""
    if spec == "none":
        return 0
    base, _, extra = spec.partition("+")
    if base not in ROLE_ORDER:
        fail("unknown role %r" % spec)
    mask = 0
    for r in ROLE_ORDER[:ROLE_ORDER.index(base) + 1]:
        mask |= 1 << ROLE_BITS[r]
    if base == "read-only" or extra == "client-cert":
        mask |= 1 << ROLE_BITS["client-cert"]
    return mask


class Schema:
    def __init__(self, root):
        self.root = root
        self.enums = json.load(open(os.path.join(root, "enums.json")))
        self.errors = json.load(open(os.path.join(root, "errors.json")))
        self.classes = []
        for path in sorted(glob.glob(os.path.join(root, "classes", "*.json")),
                           key=lambda p: os.path.basename(p).lower()):
            self.classes.append(json.load(open(path)))
        self.by_name = {c["class"]: c for c in self.classes}
        unimpl = os.path.join(root, "unimplemented.txt")
        self.unimplemented = set()
        if os.path.exists(unimpl):
            for line in open(unimpl):
                line = line.split("#", 1)[0].strip()
                if line:
                    self.unimplemented.add(line)
        self.types = {}       # text -> C identifier
        self.type_defs = []   # C definitions, dependencies first
        self.messages = []    # dicts, see build_messages
        for c in self.classes:
            c["field_index"] = {f["name"]: i for i, f in
                                enumerate(c["fields"])}
        self.build_messages()

    # ---- types ------------------------------------------------------
    def ctype(self, text):
        """C identifier of the xa_type descriptor for a schema type."""
        text = text.strip()
        if text in self.types:
            return self.types[text]
        kind, cls, enm, key, elem = self.parse_type(text)
        key_id = self.ctype(key) if key else None
        elem_id = self.ctype(elem) if elem else None
        ident = "xa_t_%d" % len(self.types)
        self.types[text] = ident
        self.type_defs.append(
            "static const struct xa_type %s = {%s, %s, %s, %s, %s, %s};" % (
                ident, kind, cstr(text),
                "&xa_cls_%s" % cls if cls else "NULL",
                "&xa_enum_%s" % enm if enm else "NULL",
                "&" + key_id if key_id else "NULL",
                "&" + elem_id if elem_id else "NULL"))
        return ident

    def parse_type(self, t):
        simple = {"string": "XA_T_STRING", "int": "XA_T_INT",
                  "float": "XA_T_FLOAT", "bool": "XA_T_BOOL",
                  "datetime": "XA_T_DATETIME", "void": "XA_T_VOID"}
        if t in simple:
            return simple[t], None, None, None, None
        if t == "an event batch" or t == "<class> record":
            return "XA_T_RECORD", None, None, None, None
        m = re.match(r"^\((.*) -> (.*)\) map$", t)
        if m:
            k, v = split_map(t[1:-len(") map")])
            return "XA_T_MAP", None, None, k, v
        if t.endswith(" set"):
            return "XA_T_SET", None, None, None, t[:-4]
        if t.endswith(" option"):
            return "XA_T_OPTION", None, None, None, t[:-7]
        if t.endswith(" ref"):
            c = t[:-4]
            if c not in self.by_name:
                fail("unknown class in type %r" % t)
            return "XA_T_REF", c, None, None, None
        if t.endswith(" record"):
            c = t[:-7]
            if c not in self.by_name:
                fail("unknown class in type %r" % t)
            return "XA_T_RECORD", c, None, None, None
        if t.startswith("enum "):
            e = t[5:]
            if e not in self.enums:
                fail("unknown enum %r" % e)
            return "XA_T_ENUM", None, e, None, None
        fail("cannot parse type %r" % t)

    # ---- messages ---------------------------------------------------
    def build_messages(self):
        for c in self.classes:
            cname = c["class"]
            flags = set(c.get("implicit", []))
            explicit = {m["name"] for m in c["messages"]}
            for m in c["messages"]:
                params = []
                for p in m["params"]:
                    params.append({"type": p[0], "name": p[1],
                                   "default": p[2] if len(p) > 2 else None})
                # "sets": an explicit message that only stores its value
                # in that field: the generic setter serves it
                kind, field = "XA_MSG_EXPLICIT", -1
                if m.get("generic"):
                    # the generic implementation of the same name serves it
                    # (classes whose rows live in the database)
                    if m["name"] not in GENERIC_KINDS or not c.get(
                            "in_db", bool(flags & {"getters", "get_all"})):
                        fail("%s.%s: no generic implementation" %
                             (cname, m["name"]))
                    kind = GENERIC_KINDS[m["name"]]
                elif "sets" in m:
                    if m["sets"] not in c["field_index"] or \
                            len(params) != 2 or m["result"] != "void":
                        fail("%s.%s: 'sets' needs (ref, value) -> void and "
                             "a field of the class" % (cname, m["name"]))
                    kind = "XA_MSG_SET_FIELD"
                    field = c["field_index"][m["sets"]]
                self.add_message(c, m["name"], params, m["result"],
                                 m["roles"], kind, field,
                                 session=m.get("session", True),
                                 async_=m.get("async", True),
                                 hidden=m.get("hidden", False),
                                 errors=m.get("errors", []),
                                 doc=m.get("doc", ""), explicit=True)

            def implicit(name, params, result, roles, kind, field=-1,
                         async_=False, hidden=False):
                if name in explicit:
                    return
                self.add_message(c, name, params, result, roles, kind, field,
                                 async_=async_, hidden=hidden)
            self_p = {"type": cname + " ref", "name": "self"}
            wr = c.get("write_roles", "pool-operator")
            rd = c.get("read_roles", "read-only")
            if "getters" in flags:
                implicit("get_record", [self_p], cname + " record",
                         rd, "XA_MSG_GET_RECORD")
                implicit("get_by_uuid", [{"type": "string", "name": "uuid"}],
                         cname + " ref", rd, "XA_MSG_GET_BY_UUID")
            if "by_name" in flags:
                implicit("get_by_name_label",
                         [{"type": "string", "name": "label"}],
                         cname + " ref set", rd,
                         "XA_MSG_GET_BY_NAME_LABEL")
            if "get_all" in flags:
                implicit("get_all", [], cname + " ref set", rd,
                         "XA_MSG_GET_ALL")
                implicit("get_all_records", [],
                         "(%s ref -> %s record) map" % (cname, cname),
                         rd, "XA_MSG_GET_ALL_RECORDS")
                expr = [{"type": "string", "name": "expr"}]
                implicit("get_all_records_where", expr,
                         "(%s ref -> %s record) map" % (cname, cname),
                         rd, "XA_MSG_GET_ALL_RECORDS_WHERE",
                         hidden=True)
                implicit("get_all_where", expr, cname + " ref set",
                         rd, "XA_MSG_GET_ALL_WHERE", hidden=True)
            if "create" in flags:
                implicit("create", [{"type": cname + " record",
                                     "name": "args"}],
                         cname + " ref", c.get("create_roles", wr),
                         "XA_MSG_CREATE", async_=True)
            if "destroy" in flags:
                implicit("destroy", [self_p], "void",
                         c.get("destroy_roles", wr), "XA_MSG_DESTROY",
                         async_=True)
            for i, f in enumerate(c["fields"]):
                fname, ftype = f["name"], f["type"]
                if "getters" in flags:
                    implicit("get_" + fname, [self_p], ftype,
                             f.get("read_roles", rd),
                             "XA_MSG_GET_FIELD", i)
                if f["qualifier"] != "RW":
                    continue
                fw = f.get("write_roles", wr)
                implicit("set_" + fname,
                         [self_p, {"type": ftype, "name": "value"}], "void",
                         fw, "XA_MSG_SET_FIELD", i)
                m = re.match(r"^\((.*) -> (.*)\) map$", ftype)
                if m:
                    k, v = split_map(ftype[1:-len(") map")])
                    implicit("add_to_" + fname,
                             [self_p, {"type": k, "name": "key"},
                              {"type": v, "name": "value"}], "void", fw,
                             "XA_MSG_ADD_TO_MAP", i)
                    implicit("remove_from_" + fname,
                             [self_p, {"type": k, "name": "key"}], "void", fw,
                             "XA_MSG_REMOVE_FROM_MAP", i)
                elif ftype.endswith(" set"):
                    e = ftype[:-4]
                    implicit("add_" + fname,
                             [self_p, {"type": e, "name": "value"}], "void",
                             fw, "XA_MSG_ADD_TO_SET", i)
                    implicit("remove_" + fname,
                             [self_p, {"type": e, "name": "value"}], "void",
                             fw, "XA_MSG_REMOVE_FROM_SET", i)

    def add_message(self, c, name, params, result, roles, kind, field,
                    session=True, async_=False, hidden=False, errors=(),
                    doc="", explicit=False):
        n_required = len(params)
        while n_required and params[n_required - 1].get("default") is not None:
            n_required -= 1
        for p in params[:n_required]:
            if p.get("default") is not None:
                fail("%s.%s: a defaulted parameter precedes a required one"
                     % (c["class"], name))
        for e in errors:
            if e not in self.errors:
                fail("%s.%s raises unknown error %s" % (c["class"], name, e))
        self.messages.append({
            "cls": c["class"], "name": name,
            "wire": "%s.%s" % (c["class"], name), "params": params,
            "n_required": n_required, "result": result,
            "roles": roles_mask(roles), "role_spec": roles, "kind": kind,
            "field": field, "session": session, "async": async_,
            "hidden": hidden, "errors": list(errors), "doc": doc,
            "explicit": explicit})


def split_map(inner):
    """'K -> V' where V may itself be a parenthesised map."""
    depth = 0
    for i in range(len(inner) - 3):
        ch = inner[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and inner[i:i + 4] == " -> ":
            return inner[:i].strip(), inner[i + 4:].strip()
    fail("cannot split map type %r" % inner)


def cstr(s):
    if s is None:
        return "NULL"
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


C_RESERVED = {"call", "ret", "args", "params", "c", "auto", "break", "case",
              "char", "const", "continue", "default", "do", "double", "else",
              "enum", "extern", "float", "for", "goto", "if", "int", "long",
              "register", "return", "short", "signed", "sizeof", "static",
              "struct", "switch", "typedef", "union", "unsigned", "void",
              "volatile", "while", "bool", "true", "false"}


def cident(s):
    return re.sub(r"[^A-Za-z0-9_]", "_", s.strip())


def cparam(s):
    """A parameter name that cannot clash with C or our own names."""
    n = cident(s)
    return n + "_" if n in C_RESERVED else n


# ---- C parameter mapping for typed prototypes ------------------------------
def c_param(t):
    """(C type, how to read it from a checked xa_value 'v')."""
    if t in ("string", "datetime") or t.endswith(" ref") or \
            t.startswith("enum "):
        return "const char *", "%s->u.str.s"
    if t == "int":
        return "int64_t ", "%s->u.i"
    if t == "float":
        return "double ", "%s->u.d"
    if t == "bool":
        return "bool ", "%s->u.b"
    return "const struct xa_value *", "%s"


def client_param(t):
    """(C type, expression building an xa_value from argument 'a')."""
    if t in ("string",) or t.endswith(" ref") or t.startswith("enum "):
        return "const char *", "xa_string(%s)"
    if t == "datetime":
        return "const char *", "xa_datetime(%s)"
    if t == "int":
        return "int64_t ", "xa_int(%s)"
    if t == "float":
        return "double ", "xa_double(%s)"
    if t == "bool":
        return "bool ", "xa_bool(%s)"
    return "const struct xa_value *", "xa_value_copy(%s)"


HEADER = "/* Generated by api-schema/codegen/xagen.py from api-schema/. " \
         "Do not edit. */\n"


def impl_name(m):
    return "xa_impl_%s_%s" % (cident(m["cls"]), cident(m["name"]))


def impl_proto(m):
    args = ["struct xa_call *call"]
    for p in m["params"]:
        ct, _ = c_param(p["type"])
        args.append("%s%s" % (ct, cparam(p["name"])))
    if m["result"] != "void":
        args.append("struct xa_value **ret")
    return "struct xa_error *%s(%s)" % (impl_name(m), ", ".join(args))


def gen_schema_c(s, out):
    w = []
    w.append(HEADER)
    w.append('#include <stddef.h>\n#include <stdint.h>\n')
    w.append('#include "schema.h"\n#include "api/implicit.h"\n')
    w.append('#include "xa-impl.h"\n\n')
    # enums
    for name, values in sorted(s.enums.items()):
        w.append("static const char *const xa_enum_%s_values[] = {%s};\n" % (
            name, ", ".join(cstr(v) for v in values)))
        w.append("const struct xa_enum_desc xa_enum_%s = {%s, %d, "
                 "xa_enum_%s_values};\n" % (name, cstr(name), len(values),
                                             name))
    w.append("const struct xa_enum_desc *const xa_schema_enums[] = {%s};\n" %
             ", ".join("&xa_enum_%s" % n for n in sorted(s.enums)))
    w.append("const size_t xa_schema_n_enums = %d;\n\n" % len(s.enums))
    # forward declarations of classes, then all types
    for c in s.classes:
        w.append("extern const struct xa_class_desc xa_cls_%s;\n" % c["class"])
    type_of_field = {}
    for c in s.classes:
        for f in c["fields"]:
            type_of_field[(c["class"], f["name"])] = s.ctype(f["type"])
    for m in s.messages:
        m["result_t"] = s.ctype(m["result"])
        for p in m["params"]:
            p["t"] = s.ctype(p["type"])
    w.append("\n".join(s.type_defs) + "\n\n")
    # fields
    inverse = {}
    for c in s.classes:
        for f in c["fields"]:
            src = f.get("computed_from")
            if src:
                oc, of = src.split(".")
                if oc not in s.by_name or of not in s.by_name[oc]["field_index"]:
                    fail("%s.%s: bad computed_from %s" % (c["class"],
                                                         f["name"], src))
                inverse[(oc, of)] = (c["class"], f["name"])
    for c in s.classes:
        rows = []
        for i, f in enumerate(c["fields"]):
            dflt = json.dumps(f["default"]) if "default" in f else None
            rel_cls, rel_field, inv = "NULL", -1, "false"
            if f.get("computed_from"):
                oc, of = f["computed_from"].split(".")
                rel_cls = "&xa_cls_%s" % oc
                rel_field = s.by_name[oc]["field_index"][of]
                inv = "true"
            elif (c["class"], f["name"]) in inverse:
                oc, of = inverse[(c["class"], f["name"])]
                rel_cls = "&xa_cls_%s" % oc
                rel_field = s.by_name[oc]["field_index"][of]
            rows.append("    {%s, &%s, %s, %s, %d, %s, %d, %s}," % (
                cstr(f["name"]), type_of_field[(c["class"], f["name"])],
                QUALIFIERS[f["qualifier"]], cstr(dflt), i, rel_cls,
                rel_field, inv))
        w.append("static const struct xa_field_desc xa_fields_%s[] = {\n%s\n"
                 "};\n" % (c["class"], "\n".join(rows) if rows else
                           "    {NULL, NULL, XA_Q_RW, NULL, 0, NULL, -1, false}"))
    # classes
    for i, c in enumerate(s.classes):
        flags = set(c.get("implicit", []))
        bits = [b for f, b in (("create", "XA_IMPL_CREATE"),
                               ("destroy", "XA_IMPL_DESTROY"),
                               ("get_all", "XA_IMPL_GET_ALL"),
                               ("getters", "XA_IMPL_GETTERS"),
                               ("by_name", "XA_IMPL_BY_NAME")) if f in flags]
        in_db = c.get("in_db", "getters" in flags or "get_all" in flags)
        fi = c["field_index"]
        w.append("const struct xa_class_desc xa_cls_%s = {%s, %s, %d, %s, %s, "
                 "%d, xa_fields_%s, %d, %d, %s, %s};\n" % (
                     c["class"], cstr(c["class"]), cstr(c["class"].lower()),
                     i, " | ".join(bits) or "0",
                     "true" if in_db else "false", len(c["fields"]),
                     c["class"], fi.get("uuid", -1), fi.get("name_label", -1),
                     "true" if c.get("persist", True) else "false",
                     "true" if c.get("replicate", c.get("persist", True))
                     else "false"))
    w.append("const struct xa_class_desc *const xa_schema_classes[] = {%s};\n" %
             ", ".join("&xa_cls_%s" % c["class"] for c in s.classes))
    w.append("const size_t xa_schema_n_classes = %d;\n\n" % len(s.classes))
    # messages
    for i, m in enumerate(s.messages):
        if m["params"]:
            w.append("static const struct xa_param_desc xa_params_%d[] = {%s};\n"
                     % (i, ", ".join("{%s, &%s, %s}" % (
                         cstr(p["name"]), p["t"],
                         cstr(json.dumps(p["default"]))
                         if p.get("default") is not None else "NULL")
                         for p in m["params"])))
        w.append("static const char *const xa_errs_%d[] = {%s};\n" % (
            i, ", ".join([cstr(e) for e in m["errors"]] + ["NULL"])))
    rows = []
    for i, m in enumerate(s.messages):
        if m["kind"] == "XA_MSG_EXPLICIT":
            fn = "xa_thunk_%s_%s" % (cident(m["cls"]), cident(m["name"]))
        else:
            fn = "xa_implicit_call"
        rows.append('    {%s, &xa_cls_%s, %s, %d, %s, %d, &%s, 0x%x, %s, %s, '
                    '%s, %s, %s, %d, %s, xa_errs_%d},' % (
                        cstr(m["wire"]), m["cls"], cstr(m["name"]),
                        len(m["params"]),
                        "xa_params_%d" % i if m["params"] else "NULL",
                        m["n_required"], m["result_t"], m["roles"],
                        "true" if m["session"] else "false",
                        "true" if m["async"] else "false",
                        "true" if m["hidden"] else "false", m["kind"],
                        "true" if m["explicit"] else "false",
                        m["field"], fn, i))
    w.append("const struct xa_message_desc xa_schema_messages[] = {\n%s\n};\n"
             % "\n".join(rows))
    w.append("const size_t xa_schema_n_messages = %d;\n" % len(s.messages))
    write(out, "xa-schema.c", "".join(w))


def gen_impl_h(s, out):
    w = [HEADER]
    w.append("/* The hand-written implementation of every explicit message.\n"
             " * Each returns NULL on success or an error the caller owns;\n"
             " * arguments are borrowed for the call; '*ret' receives a new\n"
             " * reference to the result.  Messages listed in\n"
             " * api-schema/unimplemented.txt get generated bodies that\n"
             " * answer NOT_IMPLEMENTED. */\n")
    w.append("#ifndef XA_IMPL_H\n#define XA_IMPL_H\n\n#include <stdbool.h>\n"
             "#include <stdint.h>\n\nstruct xa_call;\nstruct xa_value;\n"
             "struct xa_error;\n\n")
    for m in s.messages:
        if m["kind"] != "XA_MSG_EXPLICIT":
            continue
        w.append(impl_proto(m) + ";\n")
        w.append("struct xa_error *xa_thunk_%s_%s(struct xa_call *call, "
                 "struct xa_value *const *args, struct xa_value **ret);\n" % (
                     cident(m["cls"]), cident(m["name"])))
    w.append("\n#endif\n")
    write(out, "xa-impl.h", "".join(w))


def gen_dispatch_c(s, out):
    w = [HEADER]
    w.append('#include <stdbool.h>\n#include <stdint.h>\n\n'
             '#include "error.h"\n#include "value.h"\n#include "xa-impl.h"\n\n')
    known = {m["wire"] for m in s.messages if m["kind"] == "XA_MSG_EXPLICIT"}
    for u in sorted(s.unimplemented):
        if u not in known and not u.endswith(".*"):
            fail("unimplemented.txt names unknown message %s" % u)
    for m in s.messages:
        if m["kind"] != "XA_MSG_EXPLICIT":
            continue
        tname = "xa_thunk_%s_%s" % (cident(m["cls"]), cident(m["name"]))
        args = ["call"]
        for i, p in enumerate(m["params"]):
            _, get = c_param(p["type"])
            args.append(get % ("args[%d]" % i))
        if m["result"] != "void":
            args.append("ret")
        unimpl = m["wire"] in s.unimplemented or \
            (m["cls"] + ".*") in s.unimplemented
        w.append("struct xa_error *\n%s(struct xa_call *call, "
                 "struct xa_value *const *args, struct xa_value **ret)\n{\n"
                 % tname)
        if unimpl:
            w.append("    (void)call;\n    (void)args;\n    (void)ret;\n"
                     "    return xa_error_not_implemented(%s);\n}\n\n"
                     % cstr(m["wire"]))
            continue
        if m["result"] == "void":
            w.append("    (void)ret;\n")
        if not m["params"]:
            w.append("    (void)args;\n")
        w.append("    return %s(%s);\n}\n\n" % (impl_name(m), ", ".join(args)))
    write(out, "xa-dispatch.c", "".join(w))


def gen_errors_h(s, out):
    w = [HEADER, "#ifndef XA_ERRORS_H\n#define XA_ERRORS_H\n\n"]
    for code, params in sorted(s.errors.items()):
        w.append('#define XA_ERR_%s "%s" /* %s */\n' % (
            code, code, ", ".join(params) if params else "no parameters"))
    w.append("\n#endif\n")
    write(out, "xa-errors.h", "".join(w))


def gen_client(s, out):
    h = [HEADER, "/* Typed client calls, one per message; see client.h for\n"
         " * the connection they use.  Results are new references. */\n"
         "#ifndef XA_CLIENT_GEN_H\n#define XA_CLIENT_GEN_H\n\n"
         "#include <stdbool.h>\n#include <stdint.h>\n\n"
         "struct xa_client;\nstruct xa_value;\nstruct xa_error;\n\n"]
    c = [HEADER, '#include "xa-client.h"\n\n#include "client.h"\n'
         '#include "value.h"\n\n']
    for m in s.messages:
        fname = "xa_client_%s_%s" % (cident(m["cls"]), cident(m["name"]))
        args = ["struct xa_client *c"]
        build = []
        for p in m["params"]:
            ct, mk = client_param(p["type"])
            pn = "a_" + cident(p["name"])
            args.append("%s%s" % (ct, pn))
            build.append("    xa_array_append(params, %s);\n" % (mk % pn))
        if m["result"] != "void":
            args.append("struct xa_value **ret")
        proto = "struct xa_error *%s(%s)" % (fname, ", ".join(args))
        h.append(proto + ";\n")
        c.append("struct xa_error *\n%s(%s)\n{\n" % (fname, ", ".join(args)))
        c.append("    struct xa_value *params = xa_array();\n")
        c.extend(build)
        c.append("    return xa_client_call(c, %s, %s, params, %s);\n}\n\n" % (
            cstr(m["wire"]), "true" if m["session"] else "false",
            "ret" if m["result"] != "void" else "NULL"))
    h.append("\n#endif\n")
    write(out, "xa-client.h", "".join(h))
    write(out, "xa-client.c", "".join(c))


def gen_docs(s, out):
    w = ["# XenAPI reference (generated)\n\n",
         "Generated from `api-schema/` by xagen. %d classes, %d messages.\n\n"
         % (len(s.classes), sum(1 for m in s.messages if not m["hidden"]))]
    by_cls = {}
    for m in s.messages:
        by_cls.setdefault(m["cls"], []).append(m)
    for c in s.classes:
        w.append("## %s\n\n" % c["class"])
        if c.get("doc"):
            w.append(c["doc"] + "\n\n")
        w.append("| field | type | qualifier |\n|---|---|---|\n")
        for f in c["fields"]:
            w.append("| %s | `%s` | %s |\n" % (f["name"], f["type"],
                                             f["qualifier"]))
        w.append("\n| message | parameters | result | roles | description |\n"
                 "|---|---|---|---|---|\n")
        for m in by_cls.get(c["class"], []):
            if not m["explicit"]:
                continue
            w.append("| %s | %s | `%s` | %s | %s |\n" % (
                m["name"], ", ".join("`%s` %s" % (p["type"], p["name"])
                                     for p in m["params"]),
                m["result"], m["role_spec"],
                m.get("doc", "").replace("|", "\\|")))
        w.append("\n")
    os.makedirs(os.path.join(out, "docs"), exist_ok=True)
    write(out, os.path.join("docs", "api.md"), "".join(w))


def write(out, name, text):
    path = os.path.join(out, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--schema", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--list-messages", action="store_true",
                    help="print every public message name and exit")
    ap.add_argument("--dump-json", action="store_true",
                    help="print every message's signature as JSON and exit")
    a = ap.parse_args()
    s = Schema(a.schema)
    if a.list_messages:
        for m in s.messages:
            if not m["hidden"]:
                print(m["wire"])
        return
    if a.dump_json:
        out = {}
        for m in s.messages:
            out[m["wire"]] = {
                "params": [[p["type"], p["name"]] for p in m["params"]],
                "result": m["result"], "roles": m["roles"],
                "session": m["session"], "async": m["async"],
                "hidden": m["hidden"], "errors": m["errors"],
                "implicit": not m["explicit"]}
        json.dump(out, sys.stdout, indent=0, sort_keys=True)
        return
    os.makedirs(a.out, exist_ok=True)
    gen_schema_c(s, a.out)
    gen_impl_h(s, a.out)
    gen_dispatch_c(s, a.out)
    gen_errors_h(s, a.out)
    gen_client(s, a.out)
    gen_docs(s, a.out)


if __name__ == "__main__":
    main()
