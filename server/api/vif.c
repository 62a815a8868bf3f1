/* vif.c - virtual network interfaces: the rules around the VIF rows.
 *
 * Device numbers are unsigned integers unique per VM; an empty MAC is
 * made from the VM's other_config:mac_seed and the device number, so the
 * same VM gets the same MACs every time (and its clones, which get a new
 * seed, get new ones).  Plug and unplug hot-plug on running VMs. */
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/implicit.h"
#include "api/vm.h"
#include "hypervisor/hv.h"
#include "network/net.h"
#include "xa-impl.h"

static bool
is_unsigned(const char *s)
{
    if (!*s || strlen(s) > 9) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
    }
    return true;
}

char *
xa_vif_mac_from_seed(const char *seed, const char *device)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    char *in = xa_asprintf("%s/%s", seed, device);
    EVP_Digest(in, strlen(in), md, &len, EVP_sha256(), NULL);
    free(in);
    /* Locally administered, unicast: bit 1 set, bit 0 clear. */
    md[0] = (unsigned char)((md[0] & 0xfc) | 0x02);
    return xa_asprintf("%02x:%02x:%02x:%02x:%02x:%02x", md[0], md[1], md[2],
                       md[3], md[4], md[5]);
}

bool
xa_vif_mac_valid(const char *mac)
{
    /* Six pairs of hex digits separated by ':' (xapi also takes '-'). */
    if (strlen(mac) != 17) {
        return false;
    }
    for (int i = 0; i < 17; i++) {
        char c = mac[i];
        if (i % 3 == 2) {
            if (c != ':' && c != '-') {
                return false;
            }
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                     (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

struct xa_error *
xa_vif_update_allowed(struct xa_txn *t, const char *vif)
{
    const char *vm = xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "VM"));
    const char *ps =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool attached = xa_api_bool(t, &xa_cls_VIF, vif,
                                XA_F(xa_cls_VIF, "currently_attached"));
    struct xa_value *ops = xa_array();
    if (strcmp(ps, "Running") == 0) {
        xa_array_append(ops, xa_string(attached ? "unplug" : "plug"));
    } else if (strcmp(ps, "Halted") == 0) {
        xa_array_append(ops, xa_string("attach"));
    }
    const struct xa_value *old = xa_db_peek_field(
        t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "allowed_operations"));
    if (old && xa_value_equal(old, ops)) {
        xa_value_unref(ops);
        return NULL;
    }
    return xa_api_set(t, &xa_cls_VIF, vif,
                      XA_F(xa_cls_VIF, "allowed_operations"), ops);
}

static bool
device_taken(struct xa_txn *t, const char *vm, const char *dev)
{
    struct xa_value *vifs =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VIFs"));
    bool taken = false;
    for (size_t i = 0; vifs && i < vifs->u.arr.n && !taken; i++) {
        taken = strcmp(xa_api_str(t, &xa_cls_VIF, vifs->u.arr.items[i]->u.str.s,
                                  XA_F(xa_cls_VIF, "device")),
                       dev) == 0;
    }
    xa_value_unref(vifs);
    return taken;
}

static struct xa_error *
vif_create(struct xa_call *call, struct xa_value *const *args,
           struct xa_value **ret)
{
    XA_UNUSED(call);
    const struct xa_value *in = args[0];
    static const char *const required[] = {"device",
                                           "network",
                                           "VM",
                                           "MAC",
                                           "MTU",
                                           "other_config",
                                           "qos_algorithm_type",
                                           "qos_algorithm_params",
                                           NULL};
    for (const char *const *r = required; *r; r++) {
        if (!xa_struct_get(in, *r)) {
            return xa_error_internal("Field %s is required by VIF.create", *r);
        }
    }
    const char *vm = xa_struct_get_str(in, "VM");
    const char *net = xa_struct_get_str(in, "network");
    const char *dev = xa_struct_get_str(in, "device");
    const char *mac = xa_struct_get_str(in, "MAC");
    int64_t mtu = xa_struct_get(in, "MTU")->u.i;
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    char *use_mac = NULL;
    bool generated = false;
    if (!xa_db_exists(t, &xa_cls_VM, vm)) {
        err = xa_error_handle_invalid("VM", vm);
    } else if (!xa_db_exists(t, &xa_cls_network, net)) {
        err = xa_error_handle_invalid("network", net);
    } else if (!is_unsigned(dev)) {
        err = xa_error_new("INVALID_DEVICE", 1, dev);
    } else if (device_taken(t, vm, dev)) {
        err = xa_error_new("DEVICE_ALREADY_EXISTS", 1, dev);
    } else if (*mac == '\0') {
        const char *seed = xa_api_map_get(
            t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "other_config"), "mac_seed");
        char fresh[37];
        if (!seed) {
            xa_uuid_generate(fresh);
            seed = fresh;
        }
        use_mac = xa_vif_mac_from_seed(seed, dev);
        generated = true;
    } else if (!xa_vif_mac_valid(mac)) {
        err = xa_error_new("MAC_INVALID", 1, mac);
    } else {
        use_mac = xa_strdup(mac);
        for (char *p = use_mac; *p; p++) {
            *p = *p == '-' ? ':'
                           : (char)(*p >= 'A' && *p <= 'F' ? *p | 0x20 : *p);
        }
    }
    char *ref = NULL;
    if (!err) {
        if (mtu <= 0) {
            mtu = xa_api_int(t, &xa_cls_network, net,
                             XA_F(xa_cls_network, "MTU"));
            mtu = mtu > 0 ? mtu : 1500;
        }
        struct xa_value *rec = xa_struct();
        for (size_t i = 0; i < in->u.st.n; i++) {
            int f = xa_schema_field_index(&xa_cls_VIF, in->u.st.m[i].key);
            if (f >= 0 && xa_cls_VIF.fields[f].qual != XA_Q_RO_RUNTIME &&
                !xa_cls_VIF.fields[f].is_inverse_set) {
                xa_struct_set(rec, in->u.st.m[i].key,
                              xa_value_ref(in->u.st.m[i].val));
            }
        }
        xa_struct_set(rec, "MAC", xa_string(use_mac));
        xa_struct_set(rec, "MTU", xa_int(mtu));
        xa_struct_set(rec, "MAC_autogenerated", xa_bool(generated));
        xa_struct_set(rec, "currently_attached", xa_bool(false));
        xa_struct_set(rec, "status_code", xa_int(0));
        xa_struct_set(rec, "status_detail", xa_string(""));
        xa_struct_set(rec, "runtime_properties", xa_struct());
        xa_struct_set(rec, "qos_supported_algorithms", xa_array());
        xa_struct_set(rec, "ipv4_configuration_mode", xa_string("None"));
        xa_struct_set(rec, "ipv6_configuration_mode", xa_string("None"));
        ref = xa_ref_new();
        err = xa_db_create(t, &xa_cls_VIF, ref, rec);
        if (!err) {
            err = xa_vif_update_allowed(t, ref);
        }
    }
    free(use_mac);
    err = xa_api_finish(t, err);
    if (err) {
        free(ref);
        return err;
    }
    *ret = xa_string_take(ref);
    return NULL;
}

static struct xa_error *
vif_destroy(struct xa_call *call, struct xa_value *const *args,
            struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = NULL;
    const char *vif = args[0]->u.str.s;
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_VIF, vif)) {
        err = xa_error_handle_invalid("VIF", vif);
    } else if (xa_api_bool(t, &xa_cls_VIF, vif,
                           XA_F(xa_cls_VIF, "currently_attached"))) {
        err = xa_error_new("DEVICE_ALREADY_ATTACHED", 1, vif);
    } else {
        err = xa_db_destroy(t, &xa_cls_VIF, vif);
    }
    return xa_api_finish(t, err);
}

static struct xa_error *
vif_plug_unplug(struct xa_call *call, const char *vif, bool attach)
{
    struct xa_txn *t = xa_db_begin_read();
    const char *vm = xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "VM"));
    const char *ps =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool attached = xa_api_bool(t, &xa_cls_VIF, vif,
                                XA_F(xa_cls_VIF, "currently_attached"));
    struct xa_error *err = NULL;
    if (strcmp(ps, "Running") != 0) {
        char actual[16];
        snprintf(actual, sizeof actual, "%s", ps);
        actual[0] = (char)(actual[0] | 0x20);
        err = xa_error_new("VM_BAD_POWER_STATE", 3, vm, "running", actual);
    } else if (attach && attached) {
        err = xa_error_new("DEVICE_ALREADY_ATTACHED", 1, vif);
    } else if (!attach && !attached) {
        err = xa_error_new("DEVICE_ALREADY_DETACHED", 1, vif);
    }
    char *uuid =
        xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid")));
    char *dev =
        xa_strdup(xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "device")));
    char *mac =
        xa_strdup(xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "MAC")));
    const char *net =
        xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "network"));
    char *bridge = xa_strdup(
        xa_api_str(t, &xa_cls_network, net, XA_F(xa_cls_network, "bridge")));
    int64_t mtu = xa_api_int(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "MTU"));
    xa_db_end(t);
    if (!err) {
        if (attach) {
            struct xa_hv_nic nic = {dev, mac, bridge, mtu};
            err = xa_hv_plug_nic(call->msg->wire, uuid, &nic);
        } else {
            err = xa_hv_name_detach(
                xa_hv_unplug_nic(call->msg->wire, uuid, dev), "VIF", vif);
        }
    }
    if (!err) {
        err = attach ? xa_net_plug_vif(vif, NULL) : xa_net_unplug_vif(vif);
    }
    if (!err) {
        t = xa_db_begin_write();
        err =
            xa_api_set(t, &xa_cls_VIF, vif,
                       XA_F(xa_cls_VIF, "currently_attached"), xa_bool(attach));
        if (!err) {
            err = xa_vif_update_allowed(t, vif);
        }
        err = xa_api_finish(t, err);
    }
    free(uuid);
    free(dev);
    free(mac);
    free(bridge);
    return err;
}

struct xa_error *
xa_impl_VIF_plug(struct xa_call *call, const char *self)
{
    return vif_plug_unplug(call, self, true);
}

struct xa_error *
xa_impl_VIF_unplug(struct xa_call *call, const char *self)
{
    return vif_plug_unplug(call, self, false);
}

struct xa_error *
xa_impl_VIF_unplug_force(struct xa_call *call, const char *self)
{
    return vif_plug_unplug(call, self, false);
}

/* --- locking (xapi's change_locking_config) --------------------------- */

/* Writes one locking field of 'vif' ('v' taken), then brings the rules of
 * its port, when it has one, up to date. */
static struct xa_error *
lock_set(const char *vif, int field, struct xa_value *v)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_VIF, vif)) {
        xa_value_unref(v);
        err = xa_error_handle_invalid("VIF", vif);
    } else {
        err = xa_api_set(t, &xa_cls_VIF, vif, field, v);
    }
    err = xa_api_finish(t, err);
    if (!err) {
        err = xa_net_refresh_vif(vif);
    }
    return err;
}

/* INVALID_VALUE [field, addr] unless 'addr' is an address of 'family'. */
static struct xa_error *
check_ip(int family, const char *field, const char *addr)
{
    unsigned char buf[16];
    if (inet_pton(family, addr, buf) != 1) {
        return xa_error_new("INVALID_VALUE", 2, field, addr);
    }
    return NULL;
}

static bool
set_has(const struct xa_value *set, const char *s)
{
    for (size_t i = 0; set && i < set->u.arr.n; i++) {
        if (strcmp(set->u.arr.items[i]->u.str.s, s) == 0) {
            return true;
        }
    }
    return false;
}

/* The allowed-address list 'field' of 'vif' after 'op' ('+' adds 'addr',
 * '-' removes it); NULL when the VIF does not exist. */
static struct xa_value *
allowed_edit(const char *vif, int field, char op, const char *addr)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *cur = xa_db_exists(t, &xa_cls_VIF, vif)
                               ? xa_db_get_field(t, &xa_cls_VIF, vif, field)
                               : NULL;
    xa_db_end(t);
    if (!cur) {
        return NULL;
    }
    struct xa_value *out = xa_array();
    for (size_t i = 0; i < cur->u.arr.n; i++) {
        const char *s = cur->u.arr.items[i]->u.str.s;
        if (op != '-' || strcmp(s, addr) != 0) {
            xa_array_append(out, xa_string(s));
        }
    }
    if (op == '+' && !set_has(cur, addr)) {
        xa_array_append(out, xa_string(addr));
    }
    xa_value_unref(cur);
    return out;
}

static struct xa_error *
allowed_set(const char *vif, int family, const char *name,
            const struct xa_value *value)
{
    struct xa_value *set = xa_array();
    struct xa_error *err = NULL;
    for (size_t i = 0; i < value->u.arr.n && !err; i++) {
        const char *s = value->u.arr.items[i]->u.str.s;
        err = check_ip(family, name, s);
        if (!err && !set_has(set, s)) {
            xa_array_append(set, xa_string(s));
        }
    }
    if (err) {
        xa_value_unref(set);
        return err;
    }
    return lock_set(vif, xa_schema_field_index(&xa_cls_VIF, name), set);
}

static struct xa_error *
allowed_change(const char *vif, int family, const char *name, char op,
               const char *addr)
{
    if (op == '+') {
        struct xa_error *err = check_ip(family, name, addr);
        if (err) {
            return err;
        }
    }
    int field = xa_schema_field_index(&xa_cls_VIF, name);
    struct xa_value *set = allowed_edit(vif, field, op, addr);
    if (!set) {
        return xa_error_handle_invalid("VIF", vif);
    }
    return lock_set(vif, field, set);
}

struct xa_error *
xa_impl_VIF_set_locking_mode(struct xa_call *call, const char *self,
                             const char *value)
{
    XA_UNUSED(call);
    return lock_set(self, XA_F(xa_cls_VIF, "locking_mode"), xa_string(value));
}

struct xa_error *
xa_impl_VIF_set_ipv4_allowed(struct xa_call *call, const char *self,
                             const struct xa_value *value)
{
    XA_UNUSED(call);
    return allowed_set(self, AF_INET, "ipv4_allowed", value);
}

struct xa_error *
xa_impl_VIF_add_ipv4_allowed(struct xa_call *call, const char *self,
                             const char *value)
{
    XA_UNUSED(call);
    return allowed_change(self, AF_INET, "ipv4_allowed", '+', value);
}

struct xa_error *
xa_impl_VIF_remove_ipv4_allowed(struct xa_call *call, const char *self,
                                const char *value)
{
    XA_UNUSED(call);
    return allowed_change(self, AF_INET, "ipv4_allowed", '-', value);
}

struct xa_error *
xa_impl_VIF_set_ipv6_allowed(struct xa_call *call, const char *self,
                             const struct xa_value *value)
{
    XA_UNUSED(call);
    return allowed_set(self, AF_INET6, "ipv6_allowed", value);
}

struct xa_error *
xa_impl_VIF_add_ipv6_allowed(struct xa_call *call, const char *self,
                             const char *value)
{
    XA_UNUSED(call);
    return allowed_change(self, AF_INET6, "ipv6_allowed", '+', value);
}

struct xa_error *
xa_impl_VIF_remove_ipv6_allowed(struct xa_call *call, const char *self,
                                const char *value)
{
    XA_UNUSED(call);
    return allowed_change(self, AF_INET6, "ipv6_allowed", '-', value);
}

void
xa_vif_init(void)
{
    xa_implicit_override("VIF.create", vif_create);
    xa_implicit_override("VIF.destroy", vif_destroy);
}
