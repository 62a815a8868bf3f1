"""Dispatch errors (XENAPI.md section 1, "Dispatch errors"): unknown
methods, argument counts, bad references, bad sessions, type errors,
Async on sync-only messages, NOT_IMPLEMENTED."""

import uuid

import pytest

import xapilib
from xapilib import XapiError, expect_error


@pytest.fixture(scope="module")
def vm(session):
    tmpl = session.VM.get_by_name_label("Other install media")[0]
    rec = session.VM.get_record(tmpl)
    rec["name_label"] = "dispatch-test"
    rec["is_a_template"] = False
    return session.VM.create(rec)


@pytest.fixture(scope="module")
def host(session):
    return session.host.get_all()[0]


@pytest.fixture(scope="module")
def schema():
    return xapilib.load_xagen_schema()


# ---- unknown methods and argument counts ---------------------------------


@pytest.mark.parametrize("name", ["VM.no_such_message", "Nope",
                                  "nosuchclass.get_all", "VM.",
                                  "Async.VM.no_such", "VM_no_such"])
def test_method_unknown(session, name):
    e = expect_error(session.call, name)
    assert e.details == ["MESSAGE_METHOD_UNKNOWN", name]


def test_method_unknown_without_session(xapid):
    e = expect_error(xapid.api().call, "VM.frobnicate")
    assert e.details == ["MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"]


def test_parameter_count_mismatch_excludes_session(session, vm):
    e = expect_error(session.call, "VM.get_record")
    assert e.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record",
                         "1", "0"]
    e = expect_error(session.call, "VM.get_record", vm, vm)
    assert e.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record",
                         "1", "2"]
    e = expect_error(session.call, "VM.set_name_label", vm)
    assert e.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH",
                         "VM.set_name_label", "2", "1"]
    e = expect_error(session.call, "VM.get_all", "extra")
    assert e.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_all",
                         "0", "1"]


def test_parameter_count_checked_before_session(xapid):
    """A wrong count is reported even with a dead session."""
    e = expect_error(xapid.api().call, "VM.get_record", "OpaqueRef:dead")
    assert e.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record",
                         "1", "0"]


def test_alias_reports_count_with_dotted_name(session):
    e = expect_error(session.call, "VM_get_record")
    assert e.code == "MESSAGE_PARAMETER_COUNT_MISMATCH"
    assert e.params[1:] == ["1", "0"]


@pytest.mark.parametrize("extra", [[], ["1.1"], ["1.1", "e2e-originator"]])
def test_login_takes_two_to_four_args(xapid, extra):
    api = xapid.api()
    ref = api.call("session.login_with_password", "root", xapid.password,
                   *extra)
    assert ref.startswith("OpaqueRef:")
    assert api.call("pool.get_all", ref)
    api.call("session.logout", ref)


def test_login_with_one_or_five_args(xapid):
    api = xapid.api()
    e = expect_error(api.call, "session.login_with_password", "root")
    assert e.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH",
                         "session.login_with_password", "2", "1"]
    e = expect_error(api.call, "session.login_with_password", "root",
                     xapid.password, "1.1", "o", "x")
    assert e.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH",
                         "session.login_with_password", "2", "5"]


def test_defaulted_trailing_params_may_be_omitted(session, host, schema):
    """host.evacuate(host, network=NULL, evacuate_batch_size=0): 1-3
    arguments pass the count check, 4 do not."""
    if "host.evacuate" not in xapilib.unimplemented_messages():
        pytest.skip("host.evacuate is implemented: would evacuate the host")
    m = [m for m in schema.messages if m["wire"] == "host.evacuate"][0]
    assert (m["n_required"], len(m["params"])) == (1, 3)
    for args in ([host], [host, "OpaqueRef:NULL"], [host, "OpaqueRef:NULL", 2]):
        e = expect_error(session.call, "host.evacuate", *args)
        assert e.code == "NOT_IMPLEMENTED", (args, e.details)
    e = expect_error(session.call, "host.evacuate", host, "OpaqueRef:NULL",
                     2, "x")
    assert e.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "host.evacuate",
                         "1", "4"]


# ---- references and uuids --------------------------------------------------


@pytest.mark.parametrize("call,args", [
    ("VM.get_record", []),
    ("VM.get_name_label", []),
    ("VM.set_name_label", ["x"]),
    ("VM.add_to_other_config", ["k", "v"]),
    ("VM.add_tags", ["t"]),
    ("VM.destroy", []),
])
def test_handle_invalid(session, call, args):
    e = expect_error(session.call, call, "OpaqueRef:bogus", *args)
    assert e.details == ["HANDLE_INVALID", "VM", "OpaqueRef:bogus"]


def test_handle_invalid_for_wrong_class(session, host):
    """A host ref is no VM ref."""
    e = expect_error(session.VM.get_record, host)
    assert e.details == ["HANDLE_INVALID", "VM", host]


def test_handle_invalid_in_second_param(session, vm):
    e = expect_error(session.VM.set_affinity, vm, "OpaqueRef:nohost")
    assert e.details == ["HANDLE_INVALID", "host", "OpaqueRef:nohost"]


def test_uuid_invalid(session):
    u = str(uuid.uuid4())
    e = expect_error(session.VM.get_by_uuid, u)
    assert e.details == ["UUID_INVALID", "VM", u]
    e = expect_error(session.host.get_by_uuid, "not-a-uuid")
    assert e.details == ["UUID_INVALID", "host", "not-a-uuid"]


# ---- sessions ----------------------------------------------------------------


def test_session_invalid_bogus(xapid):
    api = xapid.api()
    e = expect_error(api.call, "VM.get_all", "OpaqueRef:bogus-session")
    assert e.details == ["SESSION_INVALID", "OpaqueRef:bogus-session"]
    # the session is checked before the object references
    e = expect_error(api.call, "VM.get_record", "OpaqueRef:bs", "OpaqueRef:x")
    assert e.details == ["SESSION_INVALID", "OpaqueRef:bs"]


def test_session_invalid_after_logout(xapid):
    s = xapid.login()
    assert s.VM.get_all()
    s.logout()
    e = expect_error(s.VM.get_all)
    assert e.details == ["SESSION_INVALID", s.ref]


def test_non_string_session(xapid):
    e = expect_error(xapid.api().call, "VM.get_all", 42)
    assert e.code == "SESSION_INVALID"


# ---- types ----------------------------------------------------------------------


def test_type_error_string_for_int(session, vm):
    e = expect_error(session.VM.set_user_version, vm, "abc")
    assert e.code in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR"), e.details
    assert len(e.params) >= 1
    # nothing was written
    assert session.VM.get_user_version(vm) != "abc"


def test_ints_as_strings_accepted(session, vm):
    session.VM.set_user_version(vm, "42")
    assert session.VM.get_user_version(vm) == "42"
    session.VM.set_user_version(vm, 43)  # <int> on the wire
    assert session.VM.get_user_version(vm) == "43"
    session.VM.set_user_version(vm, "-7")
    assert session.VM.get_user_version(vm) == "-7"


def test_int64_range(xapid, session, vm):
    big = str(2 ** 62)
    session.VM.set_user_version(vm, big)
    assert session.VM.get_user_version(vm) == big
    _, doc = xapid.jsonrpc("VM.get_user_version", [session.ref, vm])
    assert doc["result"] == 2 ** 62
    e = expect_error(session.VM.set_user_version, vm, str(2 ** 64))
    assert e.code in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR", "INVALID_VALUE")
    session.VM.set_user_version(vm, "1")


def test_wrong_type_for_bool_set_map(session, vm):
    e = expect_error(session.VM.set_is_a_template, vm, "maybe")
    assert e.code in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR"), e.details
    e = expect_error(session.VM.set_other_config, vm, ["not", "a", "map"])
    assert e.code in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR"), e.details
    e = expect_error(session.VM.set_tags, vm, {"not": "a set"})
    assert e.code in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR"), e.details
    e = expect_error(session.VM.add_to_other_config, vm, "k", ["x"])
    assert e.code in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR"), e.details
    assert "k" not in session.VM.get_other_config(vm)


def test_enum_values(session, vm):
    session.VM.set_actions_after_shutdown(vm, "restart")
    assert session.VM.get_actions_after_shutdown(vm) == "restart"
    session.VM.set_actions_after_shutdown(vm, "Destroy")  # any case
    assert session.VM.get_actions_after_shutdown(vm) == "destroy"
    e = expect_error(session.VM.set_actions_after_shutdown, vm, "explode")
    assert e.code in ("INVALID_VALUE", "INTERNAL_ERROR"), e.details
    assert "explode" in e.params
    assert session.VM.get_actions_after_shutdown(vm) == "destroy"
    # enum keys of a map are checked too
    e = expect_error(session.VM.add_to_blocked_operations, vm, "fly", "no")
    assert e.code in ("INVALID_VALUE", "INTERNAL_ERROR"), e.details
    session.VM.add_to_blocked_operations(vm, "clone", "not today")
    assert session.VM.get_blocked_operations(vm) == {"clone": "not today"}
    session.VM.remove_from_blocked_operations(vm, "clone")


def test_ref_param_must_be_string(session):
    e = expect_error(session.VM.get_record, 17)
    assert e.code in ("INTERNAL_ERROR", "FIELD_TYPE_ERROR"), e.details


# ---- Async and NOT_IMPLEMENTED ----------------------------------------------


def test_async_on_sync_only_message(session, vm):
    # dispatch.c: ["Fault", "No async mode for this operation (rpc: X)"]
    e = expect_error(session.call, "Async.VM.get_record", vm)
    assert e.details == ["Fault", "No async mode for this operation "
                         "(rpc: Async.VM.get_record)"]
    e = expect_error(session.call, "Async.session.logout")
    assert e.code == "Fault"
    e = expect_error(session.call, "Async.event.from", ["*"], "", 0.0)
    assert e.code == "Fault"
    e = expect_error(session.call, "Async.VM.set_name_label", vm, "x")
    assert e.code == "Fault"
    assert session.VM.get_name_label(vm) != "x"


def pick_unimplemented(schema, session, want_async=None):
    """An unimplemented public message whose parameters are all host refs
    or strings (so it can be called meaningfully), with its arguments."""
    host = session.host.get_all()[0]
    un = set(xapilib.unimplemented_messages())
    for m in schema.messages:
        if m["wire"] not in un or m["hidden"] or not m["session"]:
            continue
        if want_async is not None and m["async"] != want_async:
            continue
        args = []
        for p in m["params"][:m["n_required"]]:
            if p["type"] == "host ref":
                args.append(host)
            elif p["type"] == "string":
                args.append("x")
            else:
                break
        else:
            return m, args
    pytest.skip("no unimplemented message with simple parameters left")


def test_not_implemented(session, schema):
    m, args = pick_unimplemented(schema, session)
    e = expect_error(session.call, m["wire"], *args)
    assert e.details == ["NOT_IMPLEMENTED", m["wire"]]


def test_unimplemented_are_still_listed(xapid, schema, session):
    listed = set(xapid.xml("system.listMethods").xml())
    un = xapilib.unimplemented_messages()
    public = {m["wire"] for m in schema.messages if not m["hidden"]}
    assert un
    for name in un:
        if name in public:
            assert name in listed, name


def test_server_survives_errors(session):
    """After all the failures above, the server is still answering."""
    assert len(session.pool.get_all()) == 1


def test_enum_map_keys_checked(session, vm):
    try:
        e = expect_error(session.VM.set_blocked_operations, vm,
                         {"fly": "no"})
        assert e.code in ("INVALID_VALUE", "INTERNAL_ERROR"), e.details
    finally:
        session.VM.set_blocked_operations(vm, {})
