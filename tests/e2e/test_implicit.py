"""The implicit messages of every class (XENAPI.md section 3, "Generic
messages"), driven by api-schema/classes/*.json."""

import uuid

import pytest

import xapilib
from xapilib import XapiError, expect_error

CLASSES = xapilib.load_schema_classes()
GET_ALL_CLASSES = sorted(c for c, d in CLASSES.items()
                         if "get_all" in d.get("implicit", []))
ROWS_PER_CLASS = 3

# Fields the server updates by itself while we look (compared only for type).
VOLATILE = {("host_metrics", "last_updated"), ("host_metrics", "memory_free"),
            ("VM_metrics", "last_updated"), ("host_cpu", "utilisation"),
            ("session", "last_active"), ("pool", "other_config"),
            ("host", "other_config")}


@pytest.fixture(scope="module")
def xs(xapid):
    return xapilib.load_xagen_schema()


@pytest.fixture(scope="module")
def messages(xs):
    return {m["wire"]: m for m in xs.messages}


def jsession(xapid, session):
    """JSON-RPC calls with the module's session: raw values (ints as ints,
    datetimes as strings) are easier to compare than xmlrpc.client's."""
    def call(method, *args):
        return xapid.json_call(method, session.ref, *args)
    return call


def new_vm_record(session, name, **over):
    tmpl = session.VM.get_by_name_label("Other install media")[0]
    rec = session.VM.get_record(tmpl)
    rec["name_label"] = name
    rec["is_a_template"] = False
    rec["other_config"] = {}
    rec.update(over)
    return rec


@pytest.fixture(scope="module")
def vm(session):
    return session.VM.create(new_vm_record(session, "implicit-test"))


# ---- get_all and friends, for every class ----------------------------------


@pytest.mark.parametrize("cls", GET_ALL_CLASSES)
def test_get_all_variants_agree(xapid, session, cls):
    call = jsession(xapid, session)
    refs = call(cls + ".get_all")
    assert isinstance(refs, list)
    assert len(refs) == len(set(refs))
    recs = call(cls + ".get_all_records")
    assert isinstance(recs, dict)
    assert set(recs) == set(refs)
    where = call(cls + ".get_all_records_where", "true")
    assert set(where) == set(refs)
    assert set(call(cls + ".get_all_where", "true")) == set(refs)
    assert call(cls + ".get_all_records_where", "false") == {}
    assert call(cls + ".get_all_where", "false") == []
    for r in refs:
        assert r.startswith("OpaqueRef:")


def test_some_classes_have_rows(xapid, session):
    """The loop below is not vacuous: the first start made these."""
    for cls in ("pool", "host", "VM", "host_metrics", "host_cpu",
                "VM_metrics", "role"):
        assert session.call(cls + ".get_all"), cls


def schema_fields(cls):
    return [f["name"] for f in CLASSES[cls]["fields"]
            if not f["type"].endswith(" option")]


@pytest.fixture(scope="module")
def extra_rows(session):
    """Rows of a few more classes, so more than the first-start ones are
    checked."""
    net = session.network.create({"name_label": "rows-net",
                                  "other_config": {}})
    sec = session.secret.create({"value": "s3cr3t", "other_config": {}})
    task = session.task.create("rows-task", "a task")
    yield
    session.task.destroy(task)
    session.secret.destroy(sec)
    session.network.destroy(net)


def check_class_rows(call, messages, cls):
    """get_record / get_<field> / get_by_uuid / get_by_name_label agree
    for up to ROWS_PER_CLASS rows; returns how many rows were checked."""
    refs = sorted(call(cls + ".get_all"))[:ROWS_PER_CLASS]
    fields = schema_fields(cls)
    all_recs = call(cls + ".get_all_records")
    for ref in refs:
        rec = call(cls + ".get_record", ref)
        assert sorted(rec) == sorted(fields), cls
        assert set(all_recs[ref]) == set(rec)
        for f in fields:
            m = messages.get("%s.get_%s" % (cls, f))
            if m is None or m["kind"] != "XA_MSG_GET_FIELD":
                continue  # an explicit getter, tested elsewhere
            got = call("%s.get_%s" % (cls, f), ref)
            if (cls, f) in VOLATILE:
                assert type(got) is type(rec[f]), (cls, f)
            else:
                assert got == rec[f], (cls, f, got, rec[f])
        if "uuid" in rec:
            assert call(cls + ".get_by_uuid", rec["uuid"]) == ref
        if "by_name" in CLASSES[cls]["implicit"]:
            assert ref in call(cls + ".get_by_name_label", rec["name_label"])
    return len(refs)


def test_records_and_getters_of_every_class(xapid, session, messages,
                                            extra_rows):
    call = jsession(xapid, session)
    checked = {}
    for cls in GET_ALL_CLASSES:
        if "getters" in CLASSES[cls]["implicit"]:
            checked[cls] = check_class_rows(call, messages, cls)
    have_rows = {c for c, n in checked.items() if n}
    assert {"pool", "host", "VM", "host_metrics", "host_cpu", "VM_metrics",
            "role", "network", "secret", "task"} <= have_rows, have_rows


def test_record_over_xml_has_same_fields(session):
    host = session.host.get_all()[0]
    rec = session.host.get_record(host)
    assert sorted(rec) == sorted(schema_fields("host"))


def test_session_get_record(xapid, session):
    call = jsession(xapid, session)
    rec = call("session.get_record", session.ref)
    assert sorted(rec) == sorted(schema_fields("session"))
    assert rec["this_host"] == session.host.get_all()[0]
    assert call("session.get_this_host", session.ref) == rec["this_host"]
    assert call("session.get_by_uuid", rec["uuid"]) == session.ref


def test_get_by_name_label(session, vm):
    name = "implicit-name-" + uuid.uuid4().hex[:8]
    assert session.VM.get_by_name_label(name) == []
    session.VM.set_name_label(vm, name)
    assert session.VM.get_by_name_label(name) == [vm]
    other = session.VM.create(new_vm_record(session, name))
    assert sorted(session.VM.get_by_name_label(name)) == sorted([vm, other])
    session.VM.destroy(other)
    assert session.VM.get_by_name_label(name) == [vm]
    # exact match only
    assert session.VM.get_by_name_label(name[:-1]) == []


def test_get_by_uuid_every_vm(session):
    for ref, rec in session.VM.get_all_records().items():
        assert session.VM.get_by_uuid(rec["uuid"]) == ref
        assert session.VM.get_uuid(ref) == rec["uuid"]


# ---- setters on VM ----------------------------------------------------------


def test_set_string_fields(session, vm):
    session.VM.set_name_label(vm, "n1")
    session.VM.set_name_description(vm, "d1 \u00e9\u4e2d")
    rec = session.VM.get_record(vm)
    assert rec["name_label"] == "n1"
    assert rec["name_description"] == "d1 \u00e9\u4e2d"
    assert session.VM.get_name_description(vm) == "d1 \u00e9\u4e2d"


@pytest.mark.parametrize("field", ["other_config", "xenstore_data",
                                   "platform", "HVM_boot_params"])
def test_map_field(session, vm, field):
    get = getattr(session.VM, "get_" + field)
    setf = getattr(session.VM, "set_" + field)
    add = getattr(session.VM, "add_to_" + field)
    rem = getattr(session.VM, "remove_from_" + field)
    setf(vm, {"a": "1", "b": "2"})
    assert get(vm) == {"a": "1", "b": "2"}
    add(vm, "c", "3")
    assert get(vm) == {"a": "1", "b": "2", "c": "3"}
    e = expect_error(add, vm, "a", "other")
    vm_uuid = session.VM.get_uuid(vm)
    assert e.details == ["MAP_DUPLICATE_KEY", "VM", field, vm_uuid, "a"]
    assert get(vm)["a"] == "1"
    rem(vm, "b")
    assert get(vm) == {"a": "1", "c": "3"}
    rem(vm, "not-there")  # a no-op
    assert get(vm) == {"a": "1", "c": "3"}
    setf(vm, {})
    assert get(vm) == {}


def test_set_field_tags(session, vm):
    session.VM.set_tags(vm, ["x", "y"])
    assert sorted(session.VM.get_tags(vm)) == ["x", "y"]
    session.VM.add_tags(vm, "z")
    assert sorted(session.VM.get_tags(vm)) == ["x", "y", "z"]
    session.VM.add_tags(vm, "z")  # no duplicate
    assert sorted(session.VM.get_tags(vm)) == ["x", "y", "z"]
    session.VM.remove_tags(vm, "x")
    assert sorted(session.VM.get_tags(vm)) == ["y", "z"]
    session.VM.remove_tags(vm, "absent")  # a no-op
    assert sorted(session.VM.get_tags(vm)) == ["y", "z"]
    session.VM.set_tags(vm, [])
    assert session.VM.get_tags(vm) == []


def test_blocked_operations(session, vm):
    session.VM.add_to_blocked_operations(vm, "destroy", "protected")
    assert session.VM.get_blocked_operations(vm) == {"destroy": "protected"}
    e = expect_error(session.VM.add_to_blocked_operations, vm, "destroy",
                     "again")
    assert e.details == ["MAP_DUPLICATE_KEY", "VM", "blocked_operations",
                         session.VM.get_uuid(vm), "destroy"]
    session.VM.remove_from_blocked_operations(vm, "destroy")
    assert session.VM.get_blocked_operations(vm) == {}


def test_typed_setters(xapid, session, vm):
    call = jsession(xapid, session)
    session.VM.set_is_a_template(vm, True)
    assert call("VM.get_is_a_template", vm) is True
    session.VM.set_is_a_template(vm, False)
    assert call("VM.get_is_a_template", vm) is False
    session.VM.set_user_version(vm, "5")
    assert call("VM.get_user_version", vm) == 5
    host = session.host.get_all()[0]
    session.VM.set_affinity(vm, host)
    assert session.VM.get_affinity(vm) == host
    session.VM.set_affinity(vm, "OpaqueRef:NULL")
    assert session.VM.get_affinity(vm) == "OpaqueRef:NULL"


def test_no_setter_for_read_only_fields(session, vm):
    for name in ("VM.set_uuid", "VM.set_power_state", "VM.set_resident_on",
                 "host.set_API_version_major", "VM.add_to_VCPUs_params_x"):
        e = expect_error(session.call, name, vm, "x")
        assert e.details == ["MESSAGE_METHOD_UNKNOWN", name]


def test_other_classes_setters(session):
    host = session.host.get_all()[0]
    old = session.host.get_name_description(host)
    session.host.set_name_description(host, "described")
    assert session.host.get_name_description(host) == "described"
    session.host.set_name_description(host, old)
    pool = session.pool.get_all()[0]
    session.pool.add_to_other_config(pool, "e2e-key", "v")
    e = expect_error(session.pool.add_to_other_config, pool, "e2e-key", "w")
    assert e.details == ["MAP_DUPLICATE_KEY", "pool", "other_config",
                         session.pool.get_uuid(pool), "e2e-key"]
    session.pool.remove_from_other_config(pool, "e2e-key")
    assert "e2e-key" not in session.pool.get_other_config(pool)


# ---- create / destroy -------------------------------------------------------


def test_vm_create_and_destroy(xapid, session):
    rec = new_vm_record(session, "created", name_description="by e2e",
                        other_config={"k": "v"})
    ref = session.VM.create(rec)
    assert ref.startswith("OpaqueRef:")
    got = session.VM.get_record(ref)
    assert sorted(got) == sorted(schema_fields("VM"))
    assert got["name_label"] == "created"
    assert got["name_description"] == "by e2e"
    assert got["other_config"].get("k") == "v"
    assert got["memory_static_max"] == rec["memory_static_max"]
    assert got["is_a_template"] is False
    assert got["power_state"] == "Halted"
    uuid.UUID(got["uuid"])
    assert ref in session.VM.get_all()
    assert session.VM.get_by_uuid(got["uuid"]) == ref
    session.VM.destroy(ref)
    assert ref not in session.VM.get_all()
    e = expect_error(session.VM.get_record, ref)
    assert e.details == ["HANDLE_INVALID", "VM", ref]
    e = expect_error(session.VM.get_by_uuid, got["uuid"])
    assert e.details == ["UUID_INVALID", "VM", got["uuid"]]
    e = expect_error(session.VM.destroy, ref)
    assert e.details == ["HANDLE_INVALID", "VM", ref]


def test_vm_create_ignores_server_owned_fields(session):
    rec = new_vm_record(session, "owned",
                        uuid="00000000-0000-0000-0000-000000000001",
                        resident_on=session.host.get_all()[0])
    ref = session.VM.create(rec)
    got = session.VM.get_record(ref)
    assert got["resident_on"] == "OpaqueRef:NULL"
    assert got["uuid"] != "00000000-0000-0000-0000-000000000001"
    session.VM.destroy(ref)


@pytest.mark.parametrize("missing", ["is_a_template", "memory_static_max",
                                     "actions_after_crash", "PV_kernel",
                                     "HVM_boot_params", "user_version"])
def test_vm_create_missing_required_field(session, missing):
    rec = new_vm_record(session, "incomplete-" + missing)
    del rec[missing]
    before = len(session.VM.get_all())
    e = expect_error(session.VM.create, rec)
    assert e.code in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR"), e.details
    assert len(session.VM.get_all()) == before
    assert session.VM.get_by_name_label("incomplete-" + missing) == []


def test_vm_create_wrong_field_type(session):
    rec = new_vm_record(session, "badtype", memory_static_max="lots")
    e = expect_error(session.VM.create, rec)
    assert e.code in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR"), e.details
    assert session.VM.get_by_name_label("badtype") == []


def test_vm_create_not_a_struct(session):
    e = expect_error(session.VM.create, "not a record")
    assert e.code in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR"), e.details


def test_network_create_destroy(session):
    ref = session.network.create({"name_label": "e2e-net",
                                  "name_description": "", "MTU": "1500",
                                  "other_config": {"x": "y"}, "tags": []})
    rec = session.network.get_record(ref)
    assert rec["name_label"] == "e2e-net"
    assert rec["other_config"] == {"x": "y"}
    assert ref in session.network.get_by_name_label("e2e-net")
    session.network.destroy(ref)
    e = expect_error(session.network.get_record, ref)
    assert e.details == ["HANDLE_INVALID", "network", ref]


def test_no_create_for_classes_without_it(session):
    for cls in ("pool", "host_metrics", "host_cpu", "VM_metrics"):
        e = expect_error(session.call, cls + ".create", {})
        assert e.details == ["MESSAGE_METHOD_UNKNOWN", cls + ".create"]
    e = expect_error(session.call, "pool.destroy", "OpaqueRef:x")
    assert e.details == ["MESSAGE_METHOD_UNKNOWN", "pool.destroy"]


# ---- get_all_records_where ----------------------------------------------------


@pytest.fixture(scope="module")
def where_vms(session):
    tag = uuid.uuid4().hex[:8]
    a = session.VM.create(new_vm_record(session, "w-a-" + tag,
                                        name_description="alpha"))
    b = session.VM.create(new_vm_record(session, "w-b-" + tag,
                                        name_description="beta"))
    return tag, a, b


def where(session, expr):
    return set(session.VM.get_all_records_where(expr))


def test_where_name_label(session, where_vms):
    tag, a, b = where_vms
    assert where(session, 'field "name__label" = "w-a-%s"' % tag) == {a}
    assert where(session, 'field "name_label" = "w-b-%s"' % tag) == {b}
    assert where(session, 'field "name__label" = "nobody-%s"' % tag) == set()


def test_where_and_or_not(session, where_vms):
    tag, a, b = where_vms
    fa = 'field "name__label" = "w-a-%s"' % tag
    fb = 'field "name__label" = "w-b-%s"' % tag
    assert where(session, "(%s) or (%s)" % (fa, fb)) == {a, b}
    assert where(session, "%s or %s" % (fa, fb)) == {a, b}
    assert where(session, "(%s) and (%s)" % (fa, fb)) == set()
    assert where(session, '(%s) and (field "name__description" = "alpha")'
                 % fa) == {a}
    allv = set(session.VM.get_all())
    assert where(session, "not (%s)" % fa) == allv - {a}
    assert where(session, "true") == allv
    assert where(session, "not true") == set()
    assert where(session, '"x" = "x"') == allv
    assert where(session, 'field "name__label" <> "w-a-%s"' % tag) \
        == allv - {a}


def test_where_bool_fields(session):
    recs = session.VM.get_all_records()
    templates = {r for r, v in recs.items() if v["is_a_template"]}
    assert templates
    assert where(session, 'field "is_a_template" = "true"') == templates
    assert where(session, 'field "is_a_template" = "false"') \
        == set(recs) - templates
    dom0 = {r for r, v in recs.items() if v["is_control_domain"]}
    assert where(session, 'field "is_control_domain" = "true"') == dom0
    assert len(dom0) == 1


def test_where_ref_field(session):
    host = session.host.get_all()[0]
    cpus = set(session.host_cpu.get_all_records_where(
        'field "host" = "%s"' % host))
    assert cpus == set(session.host_cpu.get_all())


def test_get_all_where_matches_records_where(session, where_vms):
    tag, a, b = where_vms
    expr = 'field "name__label" = "w-a-%s"' % tag
    assert session.VM.get_all_where(expr) == [a]


@pytest.mark.parametrize("expr", [
    "", "field", 'field "name__label"', 'field "name__label" =',
    'field "no_such_field" = "x"', "(true", "true)", "true and",
    "maybe", '"unterminated', "true false", 'field name__label = "x"',
    "(" * 10000 + "true" + ")" * 10000,
    "not " * 10000 + "true",
])
def test_where_malformed(session, expr):
    e = expect_error(session.VM.get_all_records_where, expr)
    assert e.code in ("INTERNAL_ERROR", "INVALID_VALUE", "FIELD_TYPE_ERROR"), \
        e.details
    # and the server is fine
    assert session.pool.get_all()


def test_where_long_chain(session, where_vms):
    tag, a, b = where_vms
    fa = 'field "name__label" = "w-a-%s"' % tag
    expr = " or ".join(['field "name__label" = "none"'] * 3000 + [fa])
    assert where(session, expr) == {a}
