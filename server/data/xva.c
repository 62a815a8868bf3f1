/* xva.c - GET /export and PUT /import: VMs in xapi's XVA format.
 *
 * An XVA is a tar (ustar headers, 512-byte blocks): first "ova.xml", an
 * XML-RPC <value> holding a struct {version, objects}, where 'objects' is
 * an array of {class, id, snapshot} with every object's record and every
 * reference between them rewritten as "Ref:<n>"; then, per disk in
 * lexicographic order of its id, the disk's content in 1 MiB members
 * "Ref:<n>/%08d" (the chunk number), each followed by a member holding
 * its checksum: "<chunk>.xxhash", 16 upper-case hex digits of XXH64, or
 * in older files "<chunk>.checksum", SHA-1 in lower-case hex.  All-zero
 * chunks are left out, except the first and the last, so the importer
 * knows where a disk ends.  The format (stream_vdi.ml, export.ml,
 * import.ml in xapi) is followed closely enough that a VM exported by
 * XenServer or XCP-ng imports here and the other way round.
 *
 * Neither direction holds a disk in memory: export reads each chunk from
 * the disk's raw image as the client takes the response; import writes
 * each chunk into a staged raw image as it arrives and checks it against
 * its checksum, and only a complete, verified upload creates the VM. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/sr_api.h"
#include "data/data.h"
#include "data/xxh64.h"
#include "dispatch.h"
#include "log.h"
#include "rpc.h"
#include "rpc/xmlrpc.h"
#include "self.h"

#define CHUNK          (1024 * 1024)
#define BLOCK          512
#define ZERO_BLOCK     (64 * 1024)
#define OVA_MAX        (64 * 1024 * 1024)
#define PROGRESS_EVERY (64LL * 1024 * 1024)

/* ---- tar ------------------------------------------------------------------
 */

static void
octal(char *field, size_t width, uint64_t v)
{
    /* width-1 digits and a NUL, as GNU tar and xapi's ocaml-tar write. */
    snprintf(field, width, "%0*" PRIo64, (int)width - 1, v);
}

/* A ustar header for a regular file 'name' of 'size' bytes. */
static void
tar_header(char *h, const char *name, uint64_t size)
{
    memset(h, 0, BLOCK);
    snprintf(h, 100, "%s", name);
    octal(h + 100, 8, 0644);
    octal(h + 108, 8, 0);
    octal(h + 116, 8, 0);
    octal(h + 124, 12, size);
    octal(h + 136, 12, (uint64_t)time(NULL));
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < BLOCK; i++) {
        sum += (unsigned char)h[i];
    }
    snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

static uint64_t
pad_of(uint64_t size)
{
    return (BLOCK - size % BLOCK) % BLOCK;
}

/* ---- records ---------------------------------------------------------------
 *
 * The export's objects and the ids they get. */

struct obj {
    const struct xa_class_desc *cls;
    char *ref;
    char id[24];
    struct xa_value *rec;
};

struct objs {
    struct obj *o;
    size_t n;
};

static const char *
id_of(const struct objs *os, const char *ref)
{
    for (size_t i = 0; i < os->n; i++) {
        if (strcmp(os->o[i].ref, ref) == 0) {
            return os->o[i].id;
        }
    }
    return NULL;
}

static const char *
add_obj(struct objs *os, struct xa_txn *t, const struct xa_class_desc *cls,
        const char *ref)
{
    const char *have = id_of(os, ref);
    if (have || !xa_db_exists(t, cls, ref)) {
        return have;
    }
    os->o = xa_realloc(os->o, (os->n + 1) * sizeof *os->o);
    struct obj *o = &os->o[os->n];
    o->cls = cls;
    o->ref = xa_strdup(ref);
    snprintf(o->id, sizeof o->id, "Ref:%zu", os->n);
    o->rec = xa_db_get_record(t, cls, ref);
    os->n++;
    return o->id;
}

static void
objs_free(struct objs *os)
{
    for (size_t i = 0; i < os->n; i++) {
        free(os->o[i].ref);
        xa_value_unref(os->o[i].rec);
    }
    free(os->o);
}

/* A copy of 'v' with every reference rewritten as its object's id: refs
 * to objects not exported become OpaqueRef:NULL (and leave sets). */
static struct xa_value *
remap(const struct objs *os, const struct xa_value *v)
{
    if (v->kind == XA_STRING && strncmp(v->u.str.s, "OpaqueRef:", 10) == 0) {
        const char *id = id_of(os, v->u.str.s);
        return xa_string(id ? id : XA_NULL_REF);
    }
    if (v->kind == XA_ARRAY) {
        struct xa_value *a = xa_array();
        for (size_t i = 0; i < v->u.arr.n; i++) {
            struct xa_value *e = remap(os, v->u.arr.items[i]);
            if (e->kind == XA_STRING && strcmp(e->u.str.s, XA_NULL_REF) == 0 &&
                v->u.arr.items[i]->kind == XA_STRING &&
                strcmp(v->u.arr.items[i]->u.str.s, XA_NULL_REF) != 0) {
                xa_value_unref(e);
                continue;
            }
            xa_array_append(a, e);
        }
        return a;
    }
    if (v->kind == XA_STRUCT) {
        struct xa_value *s = xa_struct();
        for (size_t i = 0; i < v->u.st.n; i++) {
            xa_struct_set(s, v->u.st.m[i].key, remap(os, v->u.st.m[i].val));
        }
        return s;
    }
    return xa_value_ref((struct xa_value *)v);
}

static void
write_ova(struct xa_buf *b, const struct objs *os)
{
    struct xa_txn *t = xa_db_begin_read();
    const char *host = xa_self_host();
    const char *hostname =
        xa_api_str(t, &xa_cls_host, host, XA_F(xa_cls_host, "hostname"));
    const char *pv = xa_api_map_get(t, &xa_cls_host, host,
                                    XA_F(xa_cls_host, "software_version"),
                                    "product_version");
    const char *brand =
        xa_api_map_get(t, &xa_cls_host, host,
                       XA_F(xa_cls_host, "software_version"), "product_brand");
    const char *build =
        xa_api_map_get(t, &xa_cls_host, host,
                       XA_F(xa_cls_host, "software_version"), "build_number");
    struct xa_value *version = xa_struct();
    char now[32];
    xa_datetime_now(now);
    xa_struct_set(version, "hostname", xa_string(hostname));
    xa_struct_set(version, "date", xa_string(now));
    xa_struct_set(version, "product_version", xa_string(pv ? pv : ""));
    xa_struct_set(version, "product_brand", xa_string(brand ? brand : ""));
    xa_struct_set(version, "build_number", xa_string(build ? build : ""));
    /* xapi refuses imports from a newer xapi (major, minor) unless forced:
     * claim the oldest version that has export_vsn 2. */
    xa_struct_set(version, "xapi_major", xa_int32(1));
    xa_struct_set(version, "xapi_minor", xa_int32(0));
    xa_struct_set(version, "export_vsn", xa_int32(2));
    xa_db_end(t);
    struct xa_value *objects = xa_array();
    for (size_t i = 0; i < os->n; i++) {
        struct xa_value *o = xa_struct();
        xa_struct_set(o, "class", xa_string(os->o[i].cls->name));
        xa_struct_set(o, "id", xa_string(os->o[i].id));
        xa_struct_set(o, "snapshot", remap(os, os->o[i].rec));
        xa_array_append(objects, o);
    }
    struct xa_value *top = xa_struct();
    xa_struct_set(top, "version", version);
    xa_struct_set(top, "objects", objects);
    xa_xmlrpc_write_value(b, top);
    xa_value_unref(top);
}

/* ---- export -----------------------------------------------------------------
 */

struct out_disk {
    char prefix[24];
    int fd;
    int64_t size;
};

struct xva_out {
    char *task;
    char *ova;
    size_t ova_len;
    struct out_disk *disks;
    size_t n_disks;
    int phase;     /* 0 ova.xml, 1 disks, 2 trailer, 3 done */
    size_t disk;   /* current disk */
    int64_t chunk; /* next chunk of it */
    char *buf;     /* the unit being sent */
    size_t len, off;
    int64_t total, done, next_note;
    bool failed;
};

static bool
zero_bytes(const char *p, size_t n)
{
    static const char zeros[ZERO_BLOCK];
    while (n > 0) {
        size_t k = n < ZERO_BLOCK ? n : ZERO_BLOCK;
        if (memcmp(p, zeros, k) != 0) {
            return false;
        }
        p += k;
        n -= k;
    }
    return true;
}

/* Appends member 'name' with 'len' bytes at 'data' (may already be in
 * place at buf+len+BLOCK when 'data' is NULL). */
static void
emit(struct xva_out *x, const char *name, const char *data, size_t len)
{
    tar_header(x->buf + x->len, name, len);
    x->len += BLOCK;
    if (data) {
        memcpy(x->buf + x->len, data, len);
    }
    x->len += len;
    memset(x->buf + x->len, 0, pad_of(len));
    x->len += pad_of(len);
}

/* Fills x->buf with the next unit of the stream; false on a read error. */
static bool
produce(struct xva_out *x)
{
    x->len = x->off = 0;
    while (x->len == 0) {
        if (x->phase == 0) {
            emit(x, "ova.xml", x->ova, x->ova_len);
            x->phase = 1;
        } else if (x->phase == 1) {
            if (x->disk >= x->n_disks) {
                x->phase = 2;
                continue;
            }
            struct out_disk *d = &x->disks[x->disk];
            int64_t n_chunks = (d->size + CHUNK - 1) / CHUNK;
            if (x->chunk >= n_chunks) {
                x->disk++;
                x->chunk = 0;
                continue;
            }
            int64_t c = x->chunk++;
            off_t off = (off_t)c * CHUNK;
            size_t len =
                (size_t)(d->size - off < CHUNK ? d->size - off : CHUNK);
            bool keep = c == 0 || c == n_chunks - 1;
            x->done += (int64_t)len;
            if (!keep) {
                /* A hole reads as zeros: no need to read it. */
                off_t data = lseek(d->fd, off, SEEK_DATA);
                if ((data < 0 && errno == ENXIO) ||
                    (data >= 0 && data >= off + (off_t)len)) {
                    continue;
                }
            }
            char *at = x->buf + BLOCK;
            size_t got = 0;
            while (got < len) {
                ssize_t r = pread(d->fd, at + got, len - got, off + got);
                if (r < 0 && errno == EINTR) {
                    continue;
                }
                if (r <= 0) {
                    return false;
                }
                got += (size_t)r;
            }
            if (!keep && zero_bytes(at, len)) {
                continue;
            }
            char name[48], hex[17];
            snprintf(name, sizeof name, "%s/%08" PRId64, d->prefix, c);
            snprintf(hex, sizeof hex, "%016" PRIX64, xa_xxh64(at, len, 0));
            emit(x, name, NULL, len);
            strcat(name, ".xxhash");
            emit(x, name, hex, 16);
        } else if (x->phase == 2) {
            memset(x->buf, 0, 2 * BLOCK);
            x->len = 2 * BLOCK;
            x->phase = 3;
        } else {
            return true; /* the end: len stays 0 */
        }
    }
    return true;
}

static long
xva_read(void *ctx, uint64_t pos, char *buf, size_t max)
{
    XA_UNUSED(pos);
    struct xva_out *x = ctx;
    if (x->off == x->len && !produce(x)) {
        x->failed = true;
        return -1;
    }
    if (x->len == 0) {
        return 0;
    }
    size_t n = x->len - x->off < max ? x->len - x->off : max;
    memcpy(buf, x->buf + x->off, n);
    x->off += n;
    if (x->done >= x->next_note) {
        x->next_note += PROGRESS_EVERY;
        if (xa_data_task_cancelling(x->task)) {
            x->failed = true;
            return -1;
        }
        if (x->total > 0) {
            xa_data_task_progress(x->task, (double)x->done / (double)x->total);
        }
    }
    return (long)n;
}

static void
xva_out_free(void *ctx)
{
    struct xva_out *x = ctx;
    bool ok = !x->failed && x->phase == 3 && x->off == x->len;
    xa_data_task_finish(
        x->task,
        ok ? NULL : xa_error_new("VDI_IO_ERROR", 1, "the export was cut short"),
        NULL);
    for (size_t i = 0; i < x->n_disks; i++) {
        close(x->disks[i].fd);
    }
    free(x->disks);
    free(x->ova);
    free(x->buf);
    free(x->task);
    free(x);
}

/* Collects the VM and what it refers to; the disks to stream go to
 * '*disks' as VDI refs in stream order. */
static struct xa_error *
collect(const char *vm, struct objs *os, struct xa_value **disks)
{
    struct xa_txn *t = xa_db_begin_read();
    const char *ps =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    if (strcmp(ps, "Halted") != 0) {
        struct xa_error *e =
            xa_error_new("VM_BAD_POWER_STATE", 3, vm, "Halted", ps);
        xa_db_end(t);
        return e;
    }
    add_obj(os, t, &xa_cls_VM, vm);
    *disks = xa_array();
    struct xa_value *vbds =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VBDs"));
    for (size_t i = 0; vbds && i < vbds->u.arr.n; i++) {
        const char *vbd = vbds->u.arr.items[i]->u.str.s;
        add_obj(os, t, &xa_cls_VBD, vbd);
        const char *vdi =
            xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "VDI"));
        const char *type =
            xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "type"));
        if (strcmp(type, "Disk") != 0 || !xa_db_exists(t, &xa_cls_VDI, vdi)) {
            continue; /* CDs: the ISO stays in its library */
        }
        if (!id_of(os, vdi)) {
            add_obj(os, t, &xa_cls_VDI, vdi);
            xa_array_append(*disks, xa_string(vdi));
            add_obj(os, t, &xa_cls_SR,
                    xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "SR")));
        }
    }
    xa_value_unref(vbds);
    struct xa_value *vifs =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VIFs"));
    for (size_t i = 0; vifs && i < vifs->u.arr.n; i++) {
        const char *vif = vifs->u.arr.items[i]->u.str.s;
        add_obj(os, t, &xa_cls_VIF, vif);
        add_obj(os, t, &xa_cls_network,
                xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "network")));
    }
    xa_value_unref(vifs);
    xa_db_end(t);
    return NULL;
}

struct export_job {
    struct xa_http_request *req;
    char *vm, *task;
};

static int
by_prefix(const void *a, const void *b)
{
    return strcmp(((const struct out_disk *)a)->prefix,
                  ((const struct out_disk *)b)->prefix);
}

static void *
export_prepare(void *arg)
{
    struct export_job *job = arg;
    struct objs os = {NULL, 0};
    struct xa_value *disks = NULL;
    struct xa_error *err = collect(job->vm, &os, &disks);
    struct xva_out *x = xa_calloc(1, sizeof *x);
    x->task = job->task;
    x->disks = xa_calloc((disks ? disks->u.arr.n : 0) + 1, sizeof *x->disks);
    for (size_t i = 0; !err && i < disks->u.arr.n; i++) {
        const char *vdi = disks->u.arr.items[i]->u.str.s;
        struct xa_txn *t = xa_db_begin_read();
        struct xa_sr_info s;
        char *loc = NULL;
        err = xa_vdi_locate(t, vdi, &s, &loc);
        int64_t size =
            xa_api_int(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "virtual_size"));
        xa_db_end(t);
        char *path = NULL;
        bool temporary = false;
        if (!err) {
            err = xa_sr_vdi_export(&s.ctx, loc, "raw", &path, &temporary);
            xa_sr_info_free(&s);
        }
        free(loc);
        if (!err) {
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                err = xa_error_new("VDI_IO_ERROR", 1, strerror(errno));
            } else {
                struct out_disk *d = &x->disks[x->n_disks++];
                d->fd = fd;
                d->size = size;
                snprintf(d->prefix, sizeof d->prefix, "%s", id_of(&os, vdi));
                x->total += size;
            }
            if (temporary) {
                unlink(path);
            }
            free(path);
        }
    }
    xa_value_unref(disks);
    if (err) {
        xa_data_fail(job->req, 500, err);
        x->failed = true;
        xa_data_task_finish(x->task, err, NULL);
        x->task = NULL;
        xva_out_free(x);
    } else {
        qsort(x->disks, x->n_disks, sizeof *x->disks, by_prefix);
        struct xa_buf b = {0};
        write_ova(&b, &os);
        x->ova_len = b.len;
        x->ova = xa_buf_steal(&b);
        x->buf = xa_malloc(CHUNK + 4 * BLOCK);
        x->next_note = PROGRESS_EVERY;
        xa_http_add_header(job->req, "Content-Disposition",
                           "attachment; filename=\"vm.xva\"");
        xa_http_respond_stream(job->req, 200, "application/octet-stream", -1,
                               xva_read, x, xva_out_free);
    }
    objs_free(&os);
    free(job->vm);
    free(job);
    return NULL;
}

static void
spawn(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &a, fn, arg) != 0) {
        fn(arg);
    }
    pthread_attr_destroy(&a);
}

static void
export_handler(struct xa_http_request *r, void *ctx)
{
    XA_UNUSED(ctx);
    if (!xa_data_auth(r, "VM.copy")) {
        return;
    }
    const char *key = xa_http_query(r, "uuid");
    if (!key) {
        key = xa_http_query(r, "ref");
    }
    char *vm = xa_data_resolve(&xa_cls_VM, key);
    if (!vm) {
        struct xa_error *e = xa_error_handle_invalid("VM", key ? key : "");
        xa_data_fail(r, 404, e);
        xa_error_free(e);
        return;
    }
    struct export_job *job = xa_calloc(1, sizeof *job);
    job->req = r;
    job->vm = vm;
    job->task = xa_data_task(r, "VM export");
    xa_http_suspend(r);
    spawn(export_prepare, job);
}

/* ---- import
 * ------------------------------------------------------------------ */

struct in_disk {
    char id[24]; /* "Ref:<n>" of its VDI object */
    char *vdi;   /* the new VDI */
    char *tmp;   /* its staged raw image */
    int fd;
    int64_t size;
    int64_t last; /* chunk number of the last chunk, -1 if empty */
    bool got_last;
};

enum in_state { IN_HEADER, IN_BODY, IN_PAD, IN_END };

struct xva_in {
    struct xa_http_request *req;
    char *task, *sr;
    struct xa_error *err;
    /* tar parsing */
    enum in_state state;
    char hdr[BLOCK];
    size_t hdr_fill;
    char name[256];
    uint64_t left, pad;
    bool skip; /* a member we do not keep */
    bool is_ova, is_sum;
    /* ova.xml */
    struct xa_buf ova;
    struct xa_value *objects; /* array from ova.xml */
    bool have_ova;
    /* disks */
    struct in_disk *disks;
    size_t n_disks;
    char *chunk; /* the chunk being received, kept for its checksum */
    size_t chunk_len;
    struct in_disk *chunk_disk;
    int64_t chunk_no;
    bool want_sum; /* the next member must be the chunk's checksum */
    char sum[80];
    size_t sum_len;
    int64_t total, done, next_note;
};

/* Fails the import with IMPORT_ERROR ["<what><arg>"] (the first failure
 * wins). */
static void
in_fail(struct xva_in *x, const char *what, const char *arg)
{
    if (!x->err) {
        char *msg = xa_asprintf("%s%s", what, arg);
        x->err = xa_error_new("IMPORT_ERROR", 1, msg);
        free(msg);
    }
}

static struct in_disk *
disk_by_id(struct xva_in *x, const char *id)
{
    for (size_t i = 0; i < x->n_disks; i++) {
        if (strcmp(x->disks[i].id, id) == 0) {
            return &x->disks[i];
        }
    }
    return NULL;
}

static const char *
rec_str(const struct xa_value *rec, const char *key, const char *dflt)
{
    const char *v = xa_struct_get_str(rec, key);
    return v ? v : dflt;
}

static int64_t
rec_int(const struct xa_value *rec, const char *key)
{
    const struct xa_value *v = xa_struct_get(rec, key);
    int64_t n = 0;
    if (v && (v->kind == XA_INT || v->kind == XA_INT32)) {
        return v->u.i;
    }
    if (v && v->kind == XA_STRING && xa_parse_int64(v->u.str.s, &n)) {
        return n;
    }
    return 0;
}

static bool
rec_bool(const struct xa_value *rec, const char *key)
{
    const struct xa_value *v = xa_struct_get(rec, key);
    if (v && v->kind == XA_BOOL) {
        return v->u.b;
    }
    return v && v->kind == XA_STRING &&
           (strcmp(v->u.str.s, "true") == 0 || strcmp(v->u.str.s, "1") == 0);
}

/* The objects of 'cls' in the ova. */
static const struct xa_value *
obj_field(const struct xa_value *o, const char *key)
{
    return xa_struct_get(o, key);
}

/* ova.xml is in: parse it and make the VDIs its disks will fill. */
static void
ova_done(struct xva_in *x)
{
    /* The parser takes a whole methodCall: wrap the bare value in one. */
    struct xa_buf call = {0};
    xa_buf_puts(&call, "<?xml version=\"1.0\"?><methodCall><methodName>"
                       "ova</methodName><params><param>");
    xa_buf_append(&call, x->ova.data ? x->ova.data : "", x->ova.len);
    xa_buf_puts(&call, "</param></params></methodCall>");
    char *method = NULL;
    struct xa_value *params = NULL;
    struct xa_error *err =
        xa_xmlrpc_parse_call(call.data, call.len, &method, &params);
    xa_buf_free(&call);
    xa_buf_free(&x->ova);
    free(method);
    const struct xa_value *top =
        !err && params->u.arr.n ? params->u.arr.items[0] : NULL;
    const struct xa_value *objects =
        top && top->kind == XA_STRUCT ? xa_struct_get(top, "objects") : NULL;
    if (err || !objects || objects->kind != XA_ARRAY) {
        in_fail(x, "ova.xml is not an XVA header", "");
        xa_error_free(err);
        xa_value_unref(params);
        return;
    }
    x->objects = xa_value_ref((struct xa_value *)objects);
    xa_value_unref(params);
    x->have_ova = true;
    /* VDIs used by CD drives live in ISO libraries: not imported. */
    struct xa_value *cd_vdis = xa_array();
    for (size_t i = 0; i < x->objects->u.arr.n; i++) {
        const struct xa_value *o = x->objects->u.arr.items[i];
        const struct xa_value *rec = obj_field(o, "snapshot");
        if (rec && strcmp(rec_str(o, "class", ""), "VBD") == 0 &&
            strcmp(rec_str(rec, "type", ""), "CD") == 0) {
            xa_array_append(cd_vdis, xa_string(rec_str(rec, "VDI", "")));
        }
    }
    for (size_t i = 0; i < x->objects->u.arr.n && !x->err; i++) {
        const struct xa_value *o = x->objects->u.arr.items[i];
        const struct xa_value *rec = obj_field(o, "snapshot");
        const char *id = rec_str(o, "id", "");
        if (!rec || strcmp(rec_str(o, "class", ""), "VDI") != 0) {
            continue;
        }
        bool cd = false;
        for (size_t j = 0; j < cd_vdis->u.arr.n && !cd; j++) {
            cd = strcmp(cd_vdis->u.arr.items[j]->u.str.s, id) == 0;
        }
        if (cd || strlen(id) >= sizeof x->disks[0].id) {
            continue;
        }
        int64_t size = rec_int(rec, "virtual_size");
        const struct xa_value *oc = xa_struct_get(rec, "other_config");
        char *ref = NULL;
        err = xa_vdi_make(x->sr, rec_str(rec, "name_label", ""),
                          rec_str(rec, "name_description", ""), size,
                          rec_str(rec, "type", "user"),
                          rec_bool(rec, "sharable"), rec_bool(rec, "read_only"),
                          oc && oc->kind == XA_STRUCT ? xa_value_copy(oc)
                                                      : xa_struct(),
                          &ref);
        if (err) {
            x->err = err;
            break;
        }
        x->disks = xa_realloc(x->disks, (x->n_disks + 1) * sizeof *x->disks);
        struct in_disk *d = &x->disks[x->n_disks++];
        memset(d, 0, sizeof *d);
        d->fd = -1;
        snprintf(d->id, sizeof d->id, "%s", id);
        d->vdi = ref;
        d->size = size;
        d->last = size > 0 ? (size - 1) / CHUNK : -1;
        x->total += size;
        struct xa_txn *t = xa_db_begin_read();
        struct xa_sr_info s;
        char *loc = NULL;
        err = xa_vdi_locate(t, ref, &s, &loc);
        xa_db_end(t);
        if (!err) {
            err = xa_sr_vdi_stage(&s.ctx, loc, &d->tmp);
            xa_sr_info_free(&s);
        }
        free(loc);
        if (!err) {
            d->fd = open(d->tmp, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
            if (d->fd < 0) {
                err = xa_error_new("VDI_IO_ERROR", 1, strerror(errno));
            }
        }
        if (err) {
            x->err = err;
        }
    }
    xa_value_unref(cd_vdis);
}

/* A whole chunk is in: write it where it belongs (zeros stay holes). */
static void
chunk_done(struct xva_in *x)
{
    struct in_disk *d = x->chunk_disk;
    off_t base = (off_t)x->chunk_no * CHUNK;
    if ((int64_t)base + (int64_t)x->chunk_len > d->size) {
        in_fail(x, "a chunk lies beyond the end of its disk: ", x->name);
        return;
    }
    for (size_t off = 0; off < x->chunk_len; off += ZERO_BLOCK) {
        size_t n =
            x->chunk_len - off < ZERO_BLOCK ? x->chunk_len - off : ZERO_BLOCK;
        if (zero_bytes(x->chunk + off, n)) {
            continue;
        }
        size_t w = 0;
        while (w < n) {
            ssize_t k = pwrite(d->fd, x->chunk + off + w, n - w,
                               base + (off_t)(off + w));
            if (k < 0 && errno == EINTR) {
                continue;
            }
            if (k <= 0) {
                if (!x->err) {
                    x->err = xa_error_new("VDI_IO_ERROR", 1,
                                          strerror(k < 0 ? errno : ENOSPC));
                }
                return;
            }
            w += (size_t)k;
        }
    }
    if (x->chunk_no == d->last) {
        d->got_last = true;
    }
    x->done += (int64_t)x->chunk_len;
}

/* The checksum member of the last chunk is in. */
static void
sum_done(struct xva_in *x)
{
    char want[80];
    bool xxh = strlen(x->name) > 7 &&
               strcmp(x->name + strlen(x->name) - 7, ".xxhash") == 0;
    if (xxh) {
        snprintf(want, sizeof want, "%016" PRIX64,
                 xa_xxh64(x->chunk, x->chunk_len, 0));
    } else {
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)x->chunk, x->chunk_len, md);
        for (int i = 0; i < SHA_DIGEST_LENGTH; i++) {
            snprintf(want + 2 * i, 3, "%02x", md[i]);
        }
    }
    x->sum[x->sum_len] = '\0';
    /* Tolerate a trailing newline from hand-made files. */
    while (x->sum_len &&
           (x->sum[x->sum_len - 1] == '\n' || x->sum[x->sum_len - 1] == ' ')) {
        x->sum[--x->sum_len] = '\0';
    }
    if (strcasecmp(want, x->sum) != 0) {
        in_fail(x, "checksum mismatch on ", x->name);
    }
}

/* A header block is in: decide where the member goes. */
static void
header_done(struct xva_in *x)
{
    static const char zeros[BLOCK];
    if (memcmp(x->hdr, zeros, BLOCK) == 0) {
        x->state = IN_END;
        return;
    }
    if (memcmp(x->hdr + 257, "ustar", 5) != 0 && x->hdr[156] != '0' &&
        x->hdr[156] != '\0') {
        in_fail(x, "not a tar stream", "");
        return;
    }
    char sz[13];
    memcpy(sz, x->hdr + 124, 12);
    sz[12] = '\0';
    x->left = strtoull(sz, NULL, 8);
    x->pad = pad_of(x->left);
    memcpy(x->name, x->hdr, 100);
    x->name[100] = '\0';
    if (x->hdr[345] && memcmp(x->hdr + 257, "ustar", 5) == 0) {
        char full[sizeof x->name + 160];
        snprintf(full, sizeof full, "%.155s/%s", x->hdr + 345, x->name);
        snprintf(x->name, sizeof x->name, "%.255s", full);
    }
    char type = x->hdr[156];
    x->skip = false;
    x->is_ova = x->is_sum = false;
    x->state = IN_BODY;
    if (type != '0' && type != '\0') {
        x->skip = true; /* pax headers, directories: nothing for us */
    } else if (!x->have_ova) {
        if (strcmp(x->name, "ova.xml") != 0) {
            in_fail(x, "the XVA does not start with ova.xml but with ",
                    x->name);
            return;
        }
        if (x->left > OVA_MAX) {
            in_fail(x, "ova.xml is too large", "");
            return;
        }
        x->is_ova = true;
    } else if (x->want_sum) {
        size_t n = strlen(x->name);
        char expect[64];
        snprintf(expect, sizeof expect, "%s/%08" PRId64, x->chunk_disk->id,
                 x->chunk_no);
        if ((n > 7 && strcmp(x->name + n - 7, ".xxhash") == 0) ||
            (n > 9 && strcmp(x->name + n - 9, ".checksum") == 0)) {
            if (strncmp(x->name, expect, strlen(expect)) != 0 ||
                x->left >= sizeof x->sum) {
                in_fail(x, "unexpected checksum member ", x->name);
                return;
            }
            x->is_sum = true;
            x->sum_len = 0;
        } else {
            in_fail(x, "chunk without a checksum before ", x->name);
            return;
        }
    } else {
        char *slash = strchr(x->name, '/');
        char *end = NULL;
        long long no = slash ? strtoll(slash + 1, &end, 10) : -1;
        if (!slash || !end || *end || no < 0 || x->left > CHUNK) {
            in_fail(x, "unexpected member ", x->name);
            return;
        }
        *slash = '\0';
        struct in_disk *d = disk_by_id(x, x->name);
        *slash = '/';
        if (!d) {
            in_fail(x,
                    "a chunk for a disk the header does not list: ", x->name);
            return;
        }
        x->chunk_disk = d;
        x->chunk_no = no;
        x->chunk_len = 0;
    }
    if (x->left == 0) {
        /* An empty member: its body and padding are nothing. */
        x->state = IN_BODY;
    }
}

static void
body_done(struct xva_in *x)
{
    if (x->skip) {
        return;
    }
    if (x->is_ova) {
        ova_done(x);
    } else if (x->is_sum) {
        sum_done(x);
        x->want_sum = false;
    } else {
        chunk_done(x);
        x->want_sum = true;
    }
}

static void
member_bytes(struct xva_in *x, const char *p, size_t n)
{
    if (x->skip) {
        return;
    }
    if (x->is_ova) {
        xa_buf_append(&x->ova, p, n);
    } else if (x->is_sum) {
        memcpy(x->sum + x->sum_len, p, n);
        x->sum_len += n;
    } else {
        memcpy(x->chunk + x->chunk_len, p, n);
        x->chunk_len += n;
    }
}

static bool
import_data(void *state, const char *data, size_t len)
{
    struct xva_in *x = state;
    if (x->state == IN_HEADER && x->hdr_fill == 0 && !x->have_ova && len >= 2 &&
        (unsigned char)data[0] == 0x1f && (unsigned char)data[1] == 0x8b) {
        in_fail(x, "compressed XVA files are not supported: gunzip it", "");
        return false;
    }
    while (len > 0 && !x->err) {
        switch (x->state) {
        case IN_HEADER: {
            size_t k = BLOCK - x->hdr_fill < len ? BLOCK - x->hdr_fill : len;
            memcpy(x->hdr + x->hdr_fill, data, k);
            x->hdr_fill += k;
            data += k;
            len -= k;
            if (x->hdr_fill == BLOCK) {
                x->hdr_fill = 0;
                header_done(x);
                if (x->state == IN_BODY && x->left == 0) {
                    body_done(x);
                    x->state = x->pad ? IN_PAD : IN_HEADER;
                }
            }
            break;
        }
        case IN_BODY: {
            size_t k = x->left < len ? (size_t)x->left : len;
            member_bytes(x, data, k);
            x->left -= k;
            data += k;
            len -= k;
            if (x->left == 0) {
                body_done(x);
                x->state = x->pad ? IN_PAD : IN_HEADER;
            }
            break;
        }
        case IN_PAD: {
            size_t k = x->pad < len ? (size_t)x->pad : len;
            x->pad -= k;
            data += k;
            len -= k;
            if (x->pad == 0) {
                x->state = IN_HEADER;
            }
            break;
        }
        case IN_END:
            len = 0; /* trailing zero blocks and padding */
            break;
        }
    }
    if (!x->err && x->done >= x->next_note) {
        x->next_note += PROGRESS_EVERY;
        if (xa_data_task_cancelling(x->task)) {
            x->err = xa_error_new("TASK_CANCELLED", 1, x->task);
        } else if (x->total > 0) {
            xa_data_task_progress(x->task,
                                  0.9 * (double)x->done / (double)x->total);
        }
    }
    return x->err == NULL;
}

/* Removes everything an import made when it fails. */
static void
import_cleanup(struct xva_in *x)
{
    for (size_t i = 0; i < x->n_disks; i++) {
        struct in_disk *d = &x->disks[i];
        if (d->fd >= 0) {
            close(d->fd);
            d->fd = -1;
        }
        if (d->tmp) {
            unlink(d->tmp);
        }
        if (d->vdi) {
            xa_error_free(xa_vdi_remove(d->vdi));
        }
    }
}

static void
xva_in_free(struct xva_in *x)
{
    for (size_t i = 0; i < x->n_disks; i++) {
        if (x->disks[i].fd >= 0) {
            close(x->disks[i].fd);
        }
        free(x->disks[i].vdi);
        free(x->disks[i].tmp);
    }
    free(x->disks);
    xa_value_unref(x->objects);
    xa_buf_free(&x->ova);
    xa_error_free(x->err);
    free(x->chunk);
    free(x->task);
    free(x->sr);
    free(x);
}

/* The stored fields of 'cls' taken from an exported record: references
 * and relationship sets are left to the caller (ids mean nothing here),
 * values are checked against our schema and dropped when they do not
 * fit. */
static struct xa_value *
fields_from(const struct xa_class_desc *cls, const struct xa_value *rec)
{
    static const char *const skip[] = {"uuid",
                                       "power_state",
                                       "current_operations",
                                       "allowed_operations",
                                       "domid",
                                       "resident_on",
                                       "is_control_domain",
                                       "currently_attached",
                                       "device",
                                       "metrics",
                                       "guest_metrics",
                                       "snapshot_of",
                                       "parent",
                                       "children",
                                       "snapshots",
                                       "is_a_snapshot",
                                       "status_code",
                                       "status_detail",
                                       "runtime_properties",
                                       "storage_lock",
                                       "location",
                                       NULL};
    struct xa_value *out = xa_struct();
    for (size_t i = 0; i < cls->n_fields; i++) {
        const struct xa_field_desc *f = &cls->fields[i];
        bool skipped = f->is_inverse_set;
        for (const char *const *s = skip; *s && !skipped; s++) {
            skipped = strcmp(f->name, *s) == 0;
        }
        const struct xa_type *ty = f->type;
        bool refs =
            ty->kind == XA_T_REF ||
            ((ty->kind == XA_T_SET || ty->kind == XA_T_MAP) && ty->elem &&
             ty->elem->kind == XA_T_REF) ||
            (ty->kind == XA_T_MAP && ty->key && ty->key->kind == XA_T_REF);
        const struct xa_value *v = xa_struct_get(rec, f->name);
        if (skipped || refs || !v) {
            continue;
        }
        struct xa_value *c = NULL;
        struct xa_error *err = xa_dispatch_coerce(ty, v, f->name, &c);
        if (err) {
            xa_error_free(err);
            continue;
        }
        xa_struct_set(out, f->name, c);
    }
    return out;
}

/* A network of this pool for an exported one: same bridge, else same
 * name, else the first one with a PIF on this host, else none. */
static char *
match_network(struct xa_txn *t, const struct xa_value *rec)
{
    struct xa_value *all = xa_db_get_all(t, &xa_cls_network);
    char *found = NULL;
    for (int pass = 0; pass < 3 && !found; pass++) {
        for (size_t i = 0; all && i < all->u.arr.n && !found; i++) {
            const char *n = all->u.arr.items[i]->u.str.s;
            bool ok = false;
            if (pass == 0 && rec) {
                ok = strcmp(xa_api_str(t, &xa_cls_network, n,
                                       XA_F(xa_cls_network, "bridge")),
                            rec_str(rec, "bridge", "\x01")) == 0;
            } else if (pass == 1 && rec) {
                ok = strcmp(xa_api_str(t, &xa_cls_network, n,
                                       XA_F(xa_cls_network, "name_label")),
                            rec_str(rec, "name_label", "\x01")) == 0;
            } else if (pass == 2) {
                ok = xa_db_count_related(t, &xa_cls_network, n,
                                         XA_F(xa_cls_network, "PIFs")) > 0;
            }
            if (ok) {
                found = xa_strdup(n);
            }
        }
    }
    xa_value_unref(all);
    return found;
}

static const struct xa_value *
find_obj(const struct xa_value *objects, const char *id)
{
    for (size_t i = 0; i < objects->u.arr.n; i++) {
        const struct xa_value *o = objects->u.arr.items[i];
        if (strcmp(rec_str(o, "id", ""), id) == 0) {
            return o;
        }
    }
    return NULL;
}

/* Creates the VMs and their devices; '*vms' gets their refs. */
static struct xa_error *
make_vms(struct xva_in *x, bool restore, struct xa_value **vms)
{
    *vms = xa_array();
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    const struct xa_value *objs = x->objects;
    for (size_t i = 0; i < objs->u.arr.n && !err; i++) {
        const struct xa_value *o = objs->u.arr.items[i];
        const struct xa_value *rec = obj_field(o, "snapshot");
        if (!rec || strcmp(rec_str(o, "class", ""), "VM") != 0 ||
            rec_bool(rec, "is_a_snapshot") ||
            rec_bool(rec, "is_control_domain")) {
            continue;
        }
        const char *vm_id = rec_str(o, "id", "");
        struct xa_value *vr = fields_from(&xa_cls_VM, rec);
        xa_struct_set(vr, "power_state", xa_string("Halted"));
        const char *uuid = rec_str(rec, "uuid", "");
        char *taken =
            xa_uuid_valid(uuid) ? xa_db_ref_by_uuid(t, &xa_cls_VM, uuid) : NULL;
        if (restore && xa_uuid_valid(uuid) && !taken) {
            xa_struct_set(vr, "uuid", xa_string(uuid));
        }
        free(taken);
        char *vm = xa_ref_new();
        err = xa_db_create(t, &xa_cls_VM, vm, vr);
        if (!err) {
            free(xa_vm_ensure_metrics(t, vm));
            xa_array_append(*vms, xa_string(vm));
        }
        for (size_t j = 0; j < objs->u.arr.n && !err; j++) {
            const struct xa_value *d = objs->u.arr.items[j];
            const struct xa_value *dr = obj_field(d, "snapshot");
            const char *cls = rec_str(d, "class", "");
            if (!dr || strcmp(rec_str(dr, "VM", ""), vm_id) != 0) {
                continue;
            }
            if (strcmp(cls, "VBD") == 0) {
                struct xa_value *br = fields_from(&xa_cls_VBD, dr);
                struct in_disk *disk = disk_by_id(x, rec_str(dr, "VDI", ""));
                xa_struct_set(br, "VM", xa_string(vm));
                xa_struct_set(br, "VDI",
                              xa_string(disk ? disk->vdi : XA_NULL_REF));
                if (!disk) {
                    xa_struct_set(br, "empty", xa_bool(true));
                }
                xa_struct_set(br, "currently_attached", xa_bool(false));
                char *ref = xa_ref_new();
                err = xa_db_create(t, &xa_cls_VBD, ref, br);
                free(ref);
            } else if (strcmp(cls, "VIF") == 0) {
                const struct xa_value *no =
                    find_obj(objs, rec_str(dr, "network", ""));
                char *net =
                    match_network(t, no ? obj_field(no, "snapshot") : NULL);
                if (!net) {
                    continue; /* nowhere to plug it */
                }
                struct xa_value *ir = fields_from(&xa_cls_VIF, dr);
                xa_struct_set(ir, "VM", xa_string(vm));
                xa_struct_set(ir, "network", xa_string(net));
                xa_struct_set(ir, "currently_attached", xa_bool(false));
                char *ref = xa_ref_new();
                err = xa_db_create(t, &xa_cls_VIF, ref, ir);
                free(ref);
                free(net);
            }
        }
        if (!err) {
            err = xa_vm_update_allowed(t, vm);
        }
        free(vm);
    }
    if (!err && (*vms)->u.arr.n == 0) {
        err = xa_error_new("IMPORT_ERROR", 1, "the XVA holds no VM");
    }
    return xa_api_finish(t, err);
}

static void *
import_finish(void *arg)
{
    struct xva_in *x = arg;
    struct xa_error *err = NULL;
    for (size_t i = 0; i < x->n_disks && !err; i++) {
        struct in_disk *d = &x->disks[i];
        if (fsync(d->fd) != 0) {
            err = xa_error_new("VDI_IO_ERROR", 1, strerror(errno));
        }
        close(d->fd);
        d->fd = -1;
        if (!err) {
            err = xa_vdi_publish(d->vdi, d->tmp, "raw");
        }
        free(d->tmp);
        d->tmp = NULL;
    }
    struct xa_value *vms = NULL;
    const char *restore = xa_http_query(x->req, "restore");
    if (!err) {
        err = make_vms(x, restore && strcmp(restore, "true") == 0, &vms);
    }
    if (err) {
        xa_log_warn("xva", "import failed: %s", err->code);
        import_cleanup(x);
        xa_data_fail(x->req, 500, err);
        xa_data_task_finish(x->task, err, NULL);
        xa_value_unref(vms);
    } else {
        xa_http_respond(x->req, 200, "text/plain", NULL, 0);
        xa_data_task_finish(x->task, NULL, vms);
    }
    xva_in_free(x);
    return NULL;
}

static void
import_end(void *state, struct xa_http_request *r, bool complete)
{
    struct xva_in *x = state;
    x->req = r;
    if (!x->err && complete) {
        if (!x->have_ova) {
            in_fail(x, "the upload holds no ova.xml", "");
        } else if (x->state != IN_END && x->state != IN_HEADER) {
            in_fail(x, "the upload ends inside member ", x->name);
        } else if (x->want_sum) {
            in_fail(x, "the upload ends before the checksum of ", x->name);
        }
        for (size_t i = 0; i < x->n_disks && !x->err; i++) {
            if (x->disks[i].last >= 0 && !x->disks[i].got_last) {
                in_fail(x, "the upload ends before the end of disk ",
                        x->disks[i].id);
            }
        }
    }
    if (x->err || !complete) {
        struct xa_error *err =
            x->err ? x->err
                   : xa_error_new("IMPORT_ERROR", 1, "the upload ended early");
        x->err = NULL;
        import_cleanup(x);
        xa_data_fail(r, 500, err);
        xa_data_task_finish(x->task, err, NULL);
        xva_in_free(x);
        return;
    }
    xa_http_suspend(r);
    spawn(import_finish, x);
}

static void *
import_begin(struct xa_http_request *r, void *ctx)
{
    XA_UNUSED(ctx);
    if (!xa_data_auth(r, "VM.create")) {
        return NULL;
    }
    char *sr = NULL;
    const char *given = xa_http_query(r, "sr_id");
    if (given && *given) {
        sr = xa_data_resolve(&xa_cls_SR, given);
    } else {
        struct xa_txn *t = xa_db_begin_read();
        sr = xa_sr_default(t);
        xa_db_end(t);
    }
    struct xa_error *err = NULL;
    if (!sr) {
        err = given && *given
                  ? xa_error_handle_invalid("SR", given)
                  : xa_error_new("DEFAULT_SR_NOT_FOUND", 1, XA_NULL_REF);
    } else {
        struct xa_txn *t = xa_db_begin_read();
        struct xa_sr_info s;
        err = xa_sr_info_plugged(t, sr, &s);
        xa_db_end(t);
        if (!err) {
            xa_sr_info_free(&s);
        }
    }
    if (err) {
        xa_data_fail(r, 500, err);
        xa_error_free(err);
        free(sr);
        return NULL;
    }
    struct xva_in *x = xa_calloc(1, sizeof *x);
    x->sr = sr;
    x->task = xa_data_task(r, "VM import");
    x->chunk = xa_malloc(CHUNK);
    x->next_note = PROGRESS_EVERY;
    return x;
}

static const struct xa_http_stream_ops import_ops = {
    .begin = import_begin,
    .data = import_data,
    .end = import_end,
};

void
xa_xva_init(void)
{
    xa_rpc_add_route("GET", "/export", export_handler, NULL);
    xa_http_stream_route("PUT", "/import", &import_ops, NULL);
}
