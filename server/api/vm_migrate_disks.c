/* vm_migrate_disks.c - the disks of a storage migration (VM.migrate_send
 * with a vdi_map): the destination's new VDIs and how each one's content
 * gets there.  See vm_migrate.h for who calls what.
 *
 * The destination makes one new VDI per moved disk in its target SR
 * (the old one's size, names and configuration) and points the VBD at
 * it, so that the domain it builds for the incoming VM opens the new
 * disk.  Content then comes one of two ways, each over a stream of
 * mig_stream.c under a token of its own:
 *   n  (kvm, running VM) the incoming QEMU serves the new disk over NBD;
 *      the source's QEMU mirrors into it while the guest runs;
 *   f  (anything else: sim, a halted VM) the source sends the old disk's
 *      content as raw bytes after an 8-byte big-endian length; the
 *      destination writes them into a staged file and publishes it as
 *      the new VDI's content once all of it came.
 * Until commit the old VDIs stay; on abort (or a commit that fails) the
 * VBDs point at the old VDIs again and the new ones are destroyed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/sr_api.h"
#include "api/vm.h"
#include "api/vm_migrate.h"
#include "hypervisor/hv.h"
#include "log.h"

#define LOG        "migrate"
#define CHUNK      (1024 * 1024)
#define ZERO_BLOCK (64 * 1024)

/* --- the destination ----------------------------------------------------- */

struct disk_in {
    char *vbd, *device, *old_vdi, *new_vdi;
    char *token;
    char kind;    /* 'n' or 'f' */
    bool premade; /* "VBD=": its VDI came with it (across pools) */
    /* 'f': the receiving thread and what it found */
    int fd;
    pthread_t th;
    bool started;
    struct xa_error *err;
};

struct xa_sxm_in {
    struct disk_in *d;
    size_t n;
};

static void
undo(struct xa_sxm_in *in)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    for (size_t i = 0; i < in->n && !err; i++) {
        if (in->d[i].new_vdi && !in->d[i].premade &&
            xa_db_exists(t, &xa_cls_VBD, in->d[i].vbd)) {
            err = xa_api_set(t, &xa_cls_VBD, in->d[i].vbd,
                             XA_F(xa_cls_VBD, "VDI"),
                             xa_string(in->d[i].old_vdi));
        }
    }
    err = xa_api_finish(t, err);
    if (err) {
        xa_log_err(LOG, "cannot point the VBDs back at their disks: %s",
                   err->code);
        xa_error_free(err);
    }
    for (size_t i = 0; i < in->n; i++) {
        if (in->d[i].new_vdi && !in->d[i].premade) {
            struct xa_error *e = xa_vdi_remove(in->d[i].new_vdi);
            if (e) {
                xa_log_err(LOG, "cannot destroy VDI %s: %s", in->d[i].new_vdi,
                           e->code);
                xa_error_free(e);
            }
        }
    }
}

static void
sxm_in_free(struct xa_sxm_in *in)
{
    for (size_t i = 0; i < in->n; i++) {
        struct disk_in *d = &in->d[i];
        free(d->vbd);
        free(d->device);
        free(d->old_vdi);
        free(d->new_vdi);
        free(d->token);
        xa_error_free(d->err);
        if (d->fd >= 0) {
            close(d->fd);
        }
    }
    free(in->d);
    free(in);
}

/* The new VDI of 'd' in 'sr', like the old one. */
static struct xa_error *
make_new(struct disk_in *d, const char *sr)
{
    struct xa_txn *t = xa_db_begin_read();
    const struct xa_class_desc *V = &xa_cls_VDI;
    const char *v = d->old_vdi;
    char *name = xa_strdup(xa_api_str(t, V, v, XA_F(xa_cls_VDI, "name_label")));
    char *desc =
        xa_strdup(xa_api_str(t, V, v, XA_F(xa_cls_VDI, "name_description")));
    char *type = xa_strdup(xa_api_str(t, V, v, XA_F(xa_cls_VDI, "type")));
    int64_t size = xa_api_int(t, V, v, XA_F(xa_cls_VDI, "virtual_size"));
    bool sharable = xa_api_bool(t, V, v, XA_F(xa_cls_VDI, "sharable"));
    bool ro = xa_api_bool(t, V, v, XA_F(xa_cls_VDI, "read_only"));
    struct xa_value *oc =
        xa_db_get_field(t, V, v, XA_F(xa_cls_VDI, "other_config"));
    xa_db_end(t);
    struct xa_error *err =
        xa_vdi_make(sr, name, desc, size, *type ? type : "user", sharable, ro,
                    oc ? oc : xa_struct(), &d->new_vdi);
    free(name);
    free(desc);
    free(type);
    return err;
}

struct xa_error *
xa_sxm_in_prepare(const char *vm, const char *spec, struct xa_sxm_in **out)
{
    struct xa_sxm_in *in = xa_calloc(1, sizeof *in);
    char *copy = xa_strdup(spec);
    struct xa_error *err = NULL;
    struct xa_txn *t = xa_db_begin_read();
    char *save = NULL;
    for (char *e = strtok_r(copy, ",", &save); e && !err;
         e = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(e, '=');
        if (!eq) {
            err = xa_error_new("INVALID_VALUE", 2, "phase", spec);
            break;
        }
        *eq = '\0';
        if (!xa_db_exists(t, &xa_cls_VBD, e) ||
            strcmp(xa_api_str(t, &xa_cls_VBD, e, XA_F(xa_cls_VBD, "VM")), vm) !=
                0) {
            err = xa_error_handle_invalid("VBD", e);
            break;
        }
        in->d = xa_realloc(in->d, (in->n + 1) * sizeof *in->d);
        struct disk_in *d = &in->d[in->n++];
        memset(d, 0, sizeof *d);
        d->fd = -1;
        d->vbd = xa_strdup(e);
        d->device = xa_strdup(
            xa_api_str(t, &xa_cls_VBD, e, XA_F(xa_cls_VBD, "userdevice")));
        d->old_vdi =
            xa_strdup(xa_api_str(t, &xa_cls_VBD, e, XA_F(xa_cls_VBD, "VDI")));
        /* the SR ref goes into new_vdi until the VDI is made */
        d->premade = !eq[1];
        d->new_vdi = xa_strdup(d->premade ? d->old_vdi : eq + 1);
    }
    xa_db_end(t);
    free(copy);
    for (size_t i = 0; i < in->n; i++) {
        if (in->d[i].premade) {
            continue;
        }
        char *sr = in->d[i].new_vdi;
        in->d[i].new_vdi = NULL;
        if (!err) {
            err = make_new(&in->d[i], sr);
        }
        free(sr);
    }
    if (!err) {
        t = xa_db_begin_write();
        for (size_t i = 0; i < in->n && !err; i++) {
            err = xa_api_set(t, &xa_cls_VBD, in->d[i].vbd,
                             XA_F(xa_cls_VBD, "VDI"),
                             xa_string(in->d[i].new_vdi));
        }
        err = xa_api_finish(t, err);
    }
    if (err) {
        undo(in);
        sxm_in_free(in);
        return err;
    }
    *out = in;
    return NULL;
}

static bool
all_zero(const char *p, size_t n)
{
    static const char zeros[ZERO_BLOCK];
    return n <= ZERO_BLOCK && memcmp(p, zeros, n) == 0;
}

static bool
read_full(int fd, char *buf, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, buf, n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return false;
        }
        buf += r;
        n -= (size_t)r;
    }
    return true;
}

/* 'f': the whole content into a staged file, then published. */
static void *
receive_main(void *arg)
{
    struct disk_in *d = arg;
    unsigned char head[8];
    uint64_t size = 0;
    if (!read_full(d->fd, (char *)head, sizeof head)) {
        d->err = xa_error_new("VDI_COPY_FAILED", 0);
        return NULL;
    }
    for (size_t i = 0; i < sizeof head; i++) {
        size = size << 8 | head[i];
    }
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    char *loc = NULL, *tmp = NULL;
    struct xa_error *err = xa_vdi_locate(t, d->new_vdi, &s, &loc);
    xa_db_end(t);
    if (err) {
        d->err = err;
        return NULL;
    }
    err = xa_sr_vdi_stage(&s.ctx, loc, &tmp);
    int out = err ? -1 : open(tmp, O_WRONLY | O_CLOEXEC);
    if (!err && out < 0) {
        err = xa_error_internal("%s: %s", tmp, strerror(errno));
    }
    char *buf = xa_malloc(CHUNK);
    uint64_t got = 0;
    while (!err && got < size) {
        size_t want = size - got < CHUNK ? (size_t)(size - got) : CHUNK;
        if (!read_full(d->fd, buf, want)) {
            err = xa_error_new("VDI_COPY_FAILED", 0);
            break;
        }
        for (size_t off = 0; off < want && !err; off += ZERO_BLOCK) {
            size_t n = want - off < ZERO_BLOCK ? want - off : ZERO_BLOCK;
            if (all_zero(buf + off, n)) {
                continue; /* the sparse file already reads zeros */
            }
            if (pwrite(out, buf + off, n, (off_t)(got + off)) != (ssize_t)n) {
                err = xa_error_internal("%s: %s", tmp, strerror(errno));
            }
        }
        got += want;
    }
    free(buf);
    if (!err && ftruncate(out, (off_t)size) != 0) {
        err = xa_error_internal("%s: %s", tmp, strerror(errno));
    }
    if (out >= 0) {
        close(out);
    }
    if (!err) {
        err = xa_vdi_publish(d->new_vdi, tmp, "raw");
    } else if (tmp) {
        unlink(tmp);
    }
    xa_log_info(LOG, "VDI %s: %" PRIu64 " of %" PRIu64 " bytes received%s",
                d->new_vdi, got, size, err ? " (failed)" : "");
    free(tmp);
    free(loc);
    xa_sr_info_free(&s);
    d->err = err;
    return NULL;
}

struct xa_error *
xa_sxm_in_serve(struct xa_sxm_in *in, const char *uuid, bool mirror,
                struct xa_buf *answer)
{
    struct xa_error *err = NULL;
    if (mirror && in->n) {
        const char **devs = xa_calloc(in->n, sizeof *devs);
        for (size_t i = 0; i < in->n; i++) {
            devs[i] = in->d[i].device;
        }
        char *endpoint = NULL;
        err =
            xa_hv_disk_export("VM.migrate_send", uuid, devs, in->n, &endpoint);
        free(devs);
        for (size_t i = 0; i < in->n && !err; i++) {
            in->d[i].kind = 'n';
            in->d[i].token = xa_mig_stream_expect_unix(endpoint);
        }
        free(endpoint);
    }
    for (size_t i = 0; i < in->n && !err && !mirror; i++) {
        struct disk_in *d = &in->d[i];
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            err = xa_error_internal("socketpair: %s", strerror(errno));
            break;
        }
        d->kind = 'f';
        d->fd = sv[0];
        d->token = xa_mig_stream_expect(sv[1]);
        d->started = pthread_create(&d->th, NULL, receive_main, d) == 0;
        if (!d->started) {
            err = xa_error_internal("cannot start a disk receiver");
        }
    }
    for (size_t i = 0; i < in->n && !err; i++) {
        xa_buf_printf(answer, "\n%s %s %c %s", in->d[i].device,
                      in->d[i].new_vdi, in->d[i].kind, in->d[i].token);
    }
    return err;
}

/* Joins the receivers ('forget': those whose stream never came end
 * now); the first error stays in its disk. */
static struct xa_error *
join_all(struct xa_sxm_in *in, bool forget)
{
    const struct xa_error *err = NULL;
    for (size_t i = 0; i < in->n; i++) {
        struct disk_in *d = &in->d[i];
        if (d->token && (forget || d->kind == 'n')) {
            xa_mig_stream_forget(d->token);
        }
        if (d->started) {
            pthread_join(d->th, NULL);
            d->started = false;
        }
        if (d->err && !err) {
            err = d->err;
        }
    }
    return err ? xa_error_copy(err) : NULL;
}

struct xa_error *
xa_sxm_in_wait(struct xa_sxm_in *in)
{
    struct xa_error *err = join_all(in, false);
    static atomic_int faults;
    if (!err && xa_mig_fault_count("disks", &faults)) {
        err = xa_error_new("VDI_COPY_FAILED", 0);
        xa_log_warn(LOG, "failing the disk copies (fault injection)");
    }
    return err;
}

struct xa_error *
xa_sxm_in_finish(struct xa_sxm_in *in, bool ok)
{
    if (!in) {
        return NULL;
    }
    struct xa_error *err = join_all(in, !ok);
    if (!ok || err) {
        undo(in);
    }
    sxm_in_free(in);
    return ok ? err : NULL;
}

/* --- the source ---------------------------------------------------------- */

void
xa_sxm_out_free(struct xa_sxm_out *o)
{
    if (!o) {
        return;
    }
    for (size_t i = 0; i < o->n; i++) {
        free(o->d[i].device);
        free(o->d[i].vbd);
        free(o->d[i].old_vdi);
        free(o->d[i].new_vdi);
        free(o->d[i].token);
        if (o->d[i].stream) {
            xa_error_free(xa_mig_stream_finish(o->d[i].stream, true, NULL));
        }
    }
    free(o->d);
    free(o->spec);
    free(o);
}

struct xa_error *
xa_sxm_out_parse(struct xa_sxm_out *o, const char *vm, char **url)
{
    char *nl = strchr(*url, '\n');
    if (!nl) {
        return NULL;
    }
    char *lines = xa_strdup(nl + 1);
    *nl = '\0';
    struct xa_txn *t = xa_db_begin_read();
    char *save = NULL;
    for (char *l = strtok_r(lines, "\n", &save); l;
         l = strtok_r(NULL, "\n", &save)) {
        char dev[64], vdi[128], kind, tok[80];
        if (sscanf(l, "%63s %127s %c %79s", dev, vdi, &kind, tok) != 4) {
            continue;
        }
        for (size_t i = 0; i < o->n; i++) {
            struct xa_sxm_out_disk *d = &o->d[i];
            if (!d->device) {
                d->device = xa_strdup(xa_api_str(
                    t, &xa_cls_VBD, d->vbd, XA_F(xa_cls_VBD, "userdevice")));
            }
            if (strcmp(d->device, dev) == 0 && !d->token) {
                d->new_vdi = xa_strdup(vdi);
                d->kind = kind;
                d->token = xa_strdup(tok);
                break;
            }
        }
    }
    xa_db_end(t);
    free(lines);
    for (size_t i = 0; i < o->n; i++) {
        if (!o->d[i].token) {
            return xa_error_internal("the destination prepared no disk %s "
                                     "for %s",
                                     o->d[i].vbd, vm);
        }
    }
    return NULL;
}

/* 'f': the old disk's raw content to the destination. */
static struct xa_error *
send_file(const struct xa_mig_dest *dest, struct xa_sxm_out_disk *d,
          int64_t *bytes)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    char *loc = NULL, *path = NULL;
    bool temporary = false;
    struct xa_error *err = xa_vdi_locate(t, d->old_vdi, &s, &loc);
    xa_db_end(t);
    if (err) {
        return err;
    }
    err = xa_sr_vdi_export(&s.ctx, loc, "raw", &path, &temporary);
    int in = err ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (!err && in < 0) {
        err = xa_error_internal("%s: %s", path, strerror(errno));
    }
    if (temporary && path) {
        unlink(path); /* gone once closed */
    }
    struct xa_mig_out *o = NULL;
    int fd = -1;
    if (!err) {
        err = xa_mig_stream_dial_to(dest, d->token, false, &o, &fd);
    }
    char *buf = xa_malloc(CHUNK);
    if (!err) {
        off_t size = lseek(in, 0, SEEK_END);
        lseek(in, 0, SEEK_SET);
        unsigned char head[8];
        for (int i = 0; i < 8; i++) {
            head[i] = (unsigned char)((uint64_t)size >> (56 - 8 * i));
        }
        bool ok = size >= 0 && xa_mig_write_all(fd, (char *)head, sizeof head);
        for (;;) {
            ssize_t n = ok ? read(in, buf, CHUNK) : -1;
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                ok = ok && n == 0;
                break;
            }
            ok = xa_mig_write_all(fd, buf, (size_t)n);
        }
        if (!ok) {
            err = xa_error_new("VDI_COPY_FAILED", 0);
        }
    }
    free(buf);
    struct xa_error *e = xa_mig_stream_finish(o, err != NULL, bytes);
    if (e && !err) {
        err = e;
    } else {
        xa_error_free(e);
    }
    if (in >= 0) {
        close(in);
    }
    free(path);
    free(loc);
    xa_sr_info_free(&s);
    return err;
}

struct xa_error *
xa_sxm_out_start(struct xa_sxm_out *o, const struct xa_mig_dest *dest,
                 struct xa_buf *mirror_arg)
{
    struct xa_error *err = NULL;
    for (size_t i = 0; i < o->n && !err; i++) {
        struct xa_sxm_out_disk *d = &o->d[i];
        double t0 = xa_monotonic();
        int64_t bytes = 0;
        if (d->kind == 'f') {
            err = send_file(dest, d, &bytes);
            xa_log_info(LOG, "disk %s sent: %" PRId64 " bytes in %.0f ms%s",
                        d->device, bytes, (xa_monotonic() - t0) * 1000.0,
                        err ? " (failed)" : "");
            o->copy_ms += (int64_t)((xa_monotonic() - t0) * 1000.0);
            continue;
        }
        int fd = -1;
        err = xa_mig_stream_dial_to(dest, d->token, true, &d->stream, &fd);
        if (!err) {
            xa_buf_printf(mirror_arg, "%s%s.%d", mirror_arg->len ? "," : "",
                          d->device, fd);
        }
    }
    return err;
}

void
xa_sxm_out_end_streams(struct xa_sxm_out *o)
{
    for (size_t i = 0; i < o->n; i++) {
        if (o->d[i].stream) {
            int64_t b = 0;
            xa_error_free(xa_mig_stream_finish(o->d[i].stream, true, &b));
            o->d[i].stream = NULL;
            o->bytes += b;
        }
    }
}

void
xa_sxm_out_drop_old(struct xa_sxm_out *o)
{
    for (size_t i = 0; i < o->n; i++) {
        struct xa_error *e = xa_vdi_remove(o->d[i].old_vdi);
        if (e) {
            xa_log_warn(LOG, "the old VDI %s stays: %s", o->d[i].old_vdi,
                        e->code);
            xa_error_free(e);
        }
    }
}
