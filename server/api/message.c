/* message.c - the message class: notifications about objects.
 *
 * Messages are rows of the database (persisted, replicated to pool
 * members, reported by event.from as class "message"), so the generic
 * implementations serve get_record, get_by_uuid, get_all,
 * get_all_records(_where) and destroy (marked "generic" in the schema);
 * this file writes them and answers the time-filtered queries. */
#include "api/message.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "api/vm.h"
#include "xa-impl.h"

extern const struct xa_class_desc xa_cls_message;

/* The class an "enum cls" value names ("Host" is the class "host"). */
static const struct xa_class_desc *
class_of(const char *cls)
{
    for (size_t i = 0; i < xa_schema_n_classes; i++) {
        if (strcasecmp(xa_schema_classes[i]->name, cls) == 0) {
            return xa_schema_classes[i];
        }
    }
    return NULL;
}

struct xa_error *
xa_message_emit(const char *name, int64_t priority, const char *cls,
                const char *obj_uuid, const char *body, char **ref_out)
{
    const struct xa_class_desc *oc = class_of(cls);
    struct xa_txn *t = xa_db_begin_write();
    char *obj = oc && oc->in_db ? xa_db_ref_by_uuid(t, oc, obj_uuid) : NULL;
    if (!obj) {
        xa_db_abort(t);
        return xa_error_uuid_invalid(cls, obj_uuid);
    }
    free(obj);
    char now[32];
    xa_datetime_now(now);
    struct xa_value *rec = xa_struct();
    xa_struct_set(rec, "name", xa_string(name));
    xa_struct_set(rec, "priority", xa_int(priority));
    xa_struct_set(rec, "cls", xa_string(cls));
    xa_struct_set(rec, "obj_uuid", xa_string(obj_uuid));
    xa_struct_set(rec, "timestamp", xa_datetime(now));
    xa_struct_set(rec, "body", xa_string(body));
    char *ref = xa_ref_new();
    struct xa_error *err =
        xa_api_finish(t, xa_db_create(t, &xa_cls_message, ref, rec));
    if (!err && ref_out) {
        *ref_out = ref;
    } else {
        free(ref);
    }
    return err;
}

struct xa_error *
xa_impl_message_create(struct xa_call *call, const char *name, int64_t priority,
                       const char *cls, const char *obj_uuid, const char *body,
                       struct xa_value **ret)
{
    XA_UNUSED(call);
    char *ref = NULL;
    struct xa_error *err =
        xa_message_emit(name, priority, cls, obj_uuid, body, &ref);
    if (!err) {
        *ret = xa_string_take(ref);
    }
    return err;
}

/* The 14 digits of a datetime ("20250319T04:16:24Z", "2025-03-19T04:16:24Z"
 * and the like), which order as the times do. */
static void
datetime_key(const char *s, char out[15])
{
    size_t n = 0;
    for (; *s && n < 14; s++) {
        if (isdigit((unsigned char)*s)) {
            out[n++] = *s;
        }
    }
    while (n < 14) {
        out[n++] = '0';
    }
    out[14] = '\0';
}

struct since_ctx {
    struct xa_txn *t;
    char since[15];
    const char *cls, *obj_uuid; /* NULL: any */
    struct xa_value *out;
};

static bool
add_if_newer(const char *ref, void *arg)
{
    struct since_ctx *c = arg;
    const char *ts = xa_api_str(c->t, &xa_cls_message, ref,
                                XA_F(xa_cls_message, "timestamp"));
    char key[15];
    datetime_key(ts, key);
    if (strcmp(key, c->since) <= 0) {
        return true;
    }
    if (c->cls && (strcmp(xa_api_str(c->t, &xa_cls_message, ref,
                                     XA_F(xa_cls_message, "cls")),
                          c->cls) != 0 ||
                   strcmp(xa_api_str(c->t, &xa_cls_message, ref,
                                     XA_F(xa_cls_message, "obj_uuid")),
                          c->obj_uuid) != 0)) {
        return true;
    }
    xa_struct_set(c->out, ref, xa_db_get_record(c->t, &xa_cls_message, ref));
    return true;
}

/* Messages newer than 'since', of the object 'obj_uuid' of 'cls' when
 * 'cls' is not NULL, as a ref -> record map. */
static struct xa_value *
messages_since(const char *since, const char *cls, const char *obj_uuid)
{
    struct since_ctx c = {.cls = cls, .obj_uuid = obj_uuid};
    datetime_key(since, c.since);
    c.out = xa_struct();
    c.t = xa_db_begin_read();
    xa_db_foreach(c.t, &xa_cls_message, add_if_newer, &c);
    xa_db_end(c.t);
    return c.out;
}

struct xa_error *
xa_impl_message_get_since(struct xa_call *call, const char *since,
                          struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = messages_since(since, NULL, NULL);
    return NULL;
}

struct xa_error *
xa_impl_message_get(struct xa_call *call, const char *cls, const char *obj_uuid,
                    const char *since, struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = messages_since(since, cls, obj_uuid);
    return NULL;
}

struct xa_error *
xa_impl_message_destroy_many(struct xa_call *call,
                             const struct xa_value *messages)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    for (size_t i = 0; i < messages->u.arr.n && !err; i++) {
        err = xa_db_destroy(t, &xa_cls_message,
                            messages->u.arr.items[i]->u.str.s);
    }
    return xa_api_finish(t, err);
}
