/* vm_cpu.c - CPU feature levelling: what a VM saw at boot and where it
 * may go afterwards.
 *
 * A featureset is xapi's text form: 32-bit words in hexadecimal joined
 * by '-' ("0febfbff-7ffafbff-...").  At VM.start the VM records the
 * pool's vendor and featureset (features_hvm or features_pv, as it boots)
 * in last_boot_CPU_flags; a running or suspended VM may only move to a
 * host of the same vendor whose featureset holds every feature it
 * booted with (VM_INCOMPATIBLE_WITH_THIS_HOST otherwise).  The pool's
 * featureset is the intersection of its hosts', recomputed when a host
 * joins, so a VM started afterwards can go anywhere in the pool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/vm.h"
#include "self.h"

#define MAX_WORDS 64

/* Parses a featureset into 'w' (zero-filled); the number of words, or -1
 * when 'text' is not a featureset ("" is one of no words). */
static int
words_of(const char *text, unsigned long w[MAX_WORDS])
{
    memset(w, 0, MAX_WORDS * sizeof *w);
    int n = 0;
    const char *p = text ? text : "";
    while (*p) {
        char *end;
        if (n == MAX_WORDS) {
            return -1;
        }
        w[n++] = strtoul(p, &end, 16);
        if (end == p || end - p > 8 || (*end && *end != '-')) {
            return -1;
        }
        p = *end ? end + 1 : end;
    }
    return n;
}

static const char *
features_key(struct xa_txn *t, const char *vm)
{
    bool hvm =
        *xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "HVM_boot_policy")) != 0;
    return hvm ? "features_hvm" : "features_pv";
}

static const char *
cpu_info_get(struct xa_txn *t, const struct xa_class_desc *cls, const char *ref,
             const char *key)
{
    const struct xa_value *m =
        /* not XA_F: its per-site cache would pin the first class */
        xa_db_peek_field(t, cls, ref, xa_api_field(cls, "cpu_info"));
    return m ? xa_struct_get_str(m, key) : NULL; /* borrowed from the row */
}

struct xa_error *
xa_vm_cpu_flags_boot(struct xa_txn *t, const char *vm)
{
    char *pool = xa_api_pool(t);
    const char *vendor =
        pool ? cpu_info_get(t, &xa_cls_pool, pool, "vendor") : NULL;
    const char *features =
        pool ? cpu_info_get(t, &xa_cls_pool, pool, features_key(t, vm)) : NULL;
    struct xa_value *flags = xa_struct();
    if (vendor && features) {
        xa_struct_add(flags, "vendor", xa_string(vendor));
        xa_struct_add(flags, "features", xa_string(features));
    }
    free(pool);
    return xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "last_boot_CPU_flags"),
                      flags);
}

struct xa_error *
xa_vm_cpu_assert_compatible(struct xa_txn *t, const char *vm, const char *host)
{
    return xa_vm_cpu_assert_fits(
        t, vm, host,
        xa_db_peek_field(t, &xa_cls_host, host, XA_F(xa_cls_host, "cpu_info")));
}

struct xa_error *
xa_vm_cpu_assert_fits(struct xa_txn *t, const char *vm, const char *host,
                      const struct xa_value *cpu_info)
{
    if (strcmp(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state")),
               "Halted") == 0) {
        return NULL; /* it boots afresh wherever it starts */
    }
    const struct xa_value *flags = xa_db_peek_field(
        t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "last_boot_CPU_flags"));
    const char *vm_vendor = flags ? xa_struct_get_str(flags, "vendor") : NULL;
    const char *vm_features =
        flags ? xa_struct_get_str(flags, "features") : NULL;
    bool map = cpu_info && cpu_info->kind == XA_STRUCT;
    const char *host_vendor =
        map ? xa_struct_get_str(cpu_info, "vendor") : NULL;
    const char *host_features =
        map ? xa_struct_get_str(cpu_info, features_key(t, vm)) : NULL;
    const char *why = NULL;
    if (vm_vendor && host_vendor && strcmp(vm_vendor, host_vendor) != 0) {
        why = "VM last booted on a host which had a CPU from a different "
              "vendor.";
    } else if (vm_features && host_features) {
        unsigned long need[MAX_WORDS], have[MAX_WORDS];
        int n = words_of(vm_features, need);
        int m = words_of(host_features, have);
        /* an unreadable set compares as nothing known (as xapi skips) */
        for (int i = 0; n >= 0 && m >= 0 && i < n && !why; i++) {
            if ((need[i] & have[i]) != need[i]) {
                why = "VM last booted on a CPU with features this host's CPU "
                      "does not have.";
            }
        }
    }
    return why ? xa_error_new("VM_INCOMPATIBLE_WITH_THIS_HOST", 3, vm, host,
                              why)
               : NULL;
}

/* The intersection of every host's value of 'key' as text into 'out'
 * (capacity 'cap'); false when no host has a readable one. */
static bool
intersect_hosts(struct xa_txn *t, const struct xa_value *hosts, const char *key,
                char *out, size_t cap)
{
    unsigned long acc[MAX_WORDS], w[MAX_WORDS];
    int len = -1;
    for (size_t i = 0; i < hosts->u.arr.n; i++) {
        int n = words_of(
            cpu_info_get(t, &xa_cls_host, hosts->u.arr.items[i]->u.str.s, key),
            w);
        if (n < 0) {
            continue;
        }
        if (len < 0) {
            memcpy(acc, w, sizeof acc);
            len = n;
            continue;
        }
        for (int k = 0; k < MAX_WORDS; k++) {
            acc[k] &= w[k]; /* a missing word is zero */
        }
        len = n > len ? n : len;
    }
    if (len < 0) {
        return false;
    }
    size_t used = 0;
    out[0] = '\0';
    for (int k = 0; k < len && used + 10 < cap; k++) {
        used += (size_t)snprintf(out + used, cap - used, "%s%08lx",
                                 k ? "-" : "", acc[k]);
    }
    return true;
}

struct xa_error *
xa_pool_cpu_level(struct xa_txn *t)
{
    static const char *const keys[] = {"features_pv", "features_hvm",
                                       "features_pv_host", "features_hvm_host"};
    char *pool = xa_api_pool(t);
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    struct xa_error *err = NULL;
    if (pool && hosts && hosts->u.arr.n) {
        struct xa_value *old = xa_db_get_field(t, &xa_cls_pool, pool,
                                               XA_F(xa_cls_pool, "cpu_info"));
        struct xa_value *info = xa_struct();
        for (size_t i = 0; old && i < old->u.st.n; i++) {
            const char *k = old->u.st.m[i].key;
            bool levelled = false;
            for (size_t j = 0; j < XA_ARRAY_SIZE(keys); j++) {
                levelled = levelled || strcmp(k, keys[j]) == 0;
            }
            if (!levelled) {
                xa_struct_add(info, k, xa_value_ref(old->u.st.m[i].val));
            }
        }
        char buf[MAX_WORDS * 9 + 1];
        for (size_t j = 0; j < XA_ARRAY_SIZE(keys); j++) {
            if (intersect_hosts(t, hosts, keys[j], buf, sizeof buf)) {
                xa_struct_add(info, keys[j], xa_string(buf));
            }
        }
        xa_value_unref(old);
        err = xa_api_set(t, &xa_cls_pool, pool, XA_F(xa_cls_pool, "cpu_info"),
                         info);
    }
    free(pool);
    xa_value_unref(hosts);
    return err;
}
