/* vdi_io.c - PUT /import_raw_vdi and GET /export_raw_vdi: a disk's
 * content as a raw, qcow2 or VHD stream, never held in memory whole.
 *
 * Import writes the body into a file the SR's backend stages next to the
 * VDI's image (raw bodies sparse: all-zero blocks are not written), and
 * only once the whole body is in and checked does the backend swap it in
 * with a rename, so a truncated, corrupt or cancelled upload leaves the
 * VDI exactly as it was.  Export streams the image itself when it is
 * already in the asked format, else a conversion made for the purpose
 * (unlinked as soon as it is open). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/sr_api.h"
#include "data/data.h"
#include "log.h"
#include "rpc.h"

#define BUF_SIZE       (1024 * 1024)
#define ZERO_BLOCK     (64 * 1024)
#define PROGRESS_EVERY (64LL * 1024 * 1024)

/* ---- publishing ---------------------------------------------------------- */

struct xa_error *
xa_vdi_publish(const char *vdi, const char *tmp, const char *format)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    char *loc = NULL;
    struct xa_error *err = xa_vdi_locate(t, vdi, &s, &loc);
    int64_t size =
        xa_api_int(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "virtual_size"));
    char *sr =
        xa_strdup(xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "SR")));
    xa_db_end(t);
    if (err) {
        unlink(tmp);
        free(sr);
        return err;
    }
    struct xa_sr_vdi v = {0};
    err = xa_sr_vdi_publish(&s.ctx, loc, tmp, format, size, &v);
    struct xa_sr_stat st;
    bool have_st = !err && xa_sr_stat(&s.ctx, &st) == NULL;
    if (!err) {
        t = xa_db_begin_write();
        if (xa_db_exists(t, &xa_cls_VDI, vdi)) {
            err = xa_api_set(t, &xa_cls_VDI, vdi,
                             XA_F(xa_cls_VDI, "physical_utilisation"),
                             xa_int(v.physical_utilisation));
            if (!err) {
                err = xa_sr_sizes(t, sr, have_st ? &st : NULL);
            }
        }
        err = xa_api_finish(t, err);
    }
    free(v.location);
    free(loc);
    free(sr);
    xa_sr_info_free(&s);
    return err;
}

/* ---- import -------------------------------------------------------------- */

struct import {
    char *vdi, *task, *tmp, *format;
    int fd;
    bool raw;
    char *buf; /* BUF_SIZE bytes gathered before each write */
    size_t fill;
    uint64_t pos;      /* bytes of body received */
    int64_t expected;  /* Content-Length, or -1 */
    int64_t next_note; /* progress is written at these marks */
    struct xa_error *err;
    struct xa_http_request *req;
};

static void
import_free(struct import *im)
{
    if (im->fd >= 0) {
        close(im->fd);
    }
    if (im->tmp) {
        unlink(im->tmp); /* harmless after a successful publish */
    }
    free(im->vdi);
    free(im->task);
    free(im->tmp);
    free(im->format);
    free(im->buf);
    xa_error_free(im->err);
    free(im);
}

static bool
all_zero(const char *p, size_t n)
{
    static const char zeros[ZERO_BLOCK];
    return n <= ZERO_BLOCK && memcmp(p, zeros, n) == 0;
}

/* Writes the gathered bytes at their offset; raw images skip the
 * all-zero blocks, which the sparse file already reads as zeros. */
static bool
flush_buf(struct import *im)
{
    uint64_t start = im->pos - im->fill;
    for (size_t off = 0; off < im->fill;) {
        size_t n = im->fill - off < ZERO_BLOCK ? im->fill - off : ZERO_BLOCK;
        if (!(im->raw && all_zero(im->buf + off, n))) {
            size_t done = 0;
            while (done < n) {
                ssize_t w = pwrite(im->fd, im->buf + off + done, n - done,
                                   (off_t)(start + off + done));
                if (w < 0 && errno == EINTR) {
                    continue;
                }
                if (w <= 0) {
                    char *msg = xa_asprintf("cannot write the image: %s",
                                            strerror(w < 0 ? errno : ENOSPC));
                    im->err = xa_error_new("VDI_IO_ERROR", 1, msg);
                    free(msg);
                    return false;
                }
                done += (size_t)w;
            }
        }
        off += n;
    }
    im->fill = 0;
    return true;
}

static void *
import_begin(struct xa_http_request *r, void *ctx)
{
    XA_UNUSED(ctx);
    if (!xa_data_auth(r, "VDI.create")) {
        return NULL;
    }
    const char *format = xa_http_query(r, "format");
    if (!format || !*format) {
        format = "raw";
    }
    if (strcmp(format, "raw") != 0 && strcmp(format, "vhd") != 0 &&
        strcmp(format, "qcow2") != 0) {
        struct xa_error *e = xa_error_new("VALUE_NOT_SUPPORTED", 3, "format",
                                          format, "use raw, vhd or qcow2");
        xa_data_fail(r, 400, e);
        xa_error_free(e);
        return NULL;
    }
    const char *chunked = xa_http_query(r, "chunked");
    if (chunked && strcmp(chunked, "true") == 0) {
        struct xa_error *e = xa_error_new("VALUE_NOT_SUPPORTED", 3, "chunked",
                                          chunked, "send the image as is");
        xa_data_fail(r, 400, e);
        xa_error_free(e);
        return NULL;
    }
    char *vdi = xa_data_resolve(&xa_cls_VDI, xa_http_query(r, "vdi"));
    if (!vdi) {
        struct xa_error *e = xa_error_handle_invalid(
            "VDI", xa_http_query(r, "vdi") ? xa_http_query(r, "vdi") : "");
        xa_data_fail(r, 404, e);
        xa_error_free(e);
        return NULL;
    }
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    char *loc = NULL;
    struct xa_error *err = xa_vdi_locate(t, vdi, &s, &loc);
    if (!err && xa_vdi_in_use(t, vdi)) {
        err = xa_error_new("VDI_IN_USE", 2, vdi, "import");
    }
    xa_db_end(t);
    char *tmp = NULL;
    if (!err) {
        err = xa_sr_vdi_stage(&s.ctx, loc, &tmp);
        xa_sr_info_free(&s);
    }
    free(loc);
    int fd = -1;
    if (!err) {
        fd = open(tmp, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            err = xa_error_new("VDI_IO_ERROR", 1, strerror(errno));
            unlink(tmp);
        }
    }
    if (err) {
        xa_data_fail(r, 500, err);
        xa_error_free(err);
        free(vdi);
        free(tmp);
        return NULL;
    }
    struct import *im = xa_calloc(1, sizeof *im);
    im->vdi = vdi;
    im->tmp = tmp;
    im->fd = fd;
    im->format = xa_strdup(format);
    im->raw = strcmp(format, "raw") == 0;
    im->buf = xa_malloc(BUF_SIZE);
    im->task = xa_data_task(r, "VDI import");
    const char *cl = xa_http_header(r, "Content-Length");
    int64_t n;
    im->expected = cl && xa_parse_int64(cl, &n) && n >= 0 ? n : -1;
    im->next_note = PROGRESS_EVERY;
    return im;
}

static bool
import_data(void *state, const char *data, size_t len)
{
    struct import *im = state;
    while (len > 0) {
        size_t take = BUF_SIZE - im->fill < len ? BUF_SIZE - im->fill : len;
        memcpy(im->buf + im->fill, data, take);
        im->fill += take;
        im->pos += take;
        data += take;
        len -= take;
        if (im->fill == BUF_SIZE && !flush_buf(im)) {
            return false;
        }
    }
    if ((int64_t)im->pos >= im->next_note) {
        im->next_note += PROGRESS_EVERY;
        if (xa_data_task_cancelling(im->task)) {
            im->err = xa_error_new("TASK_CANCELLED", 1, im->task);
            return false;
        }
        if (im->expected > 0) {
            /* The last part (publishing) is not counted here. */
            xa_data_task_progress(im->task, 0.95 * (double)im->pos /
                                                (double)im->expected);
        }
    }
    return true;
}

/* Runs the slow end of an import (fsync, checks, conversion, rename) off
 * the connection's thread, then answers. */
static void *
import_finish(void *arg)
{
    struct import *im = arg;
    struct xa_error *err = NULL;
    if (fsync(im->fd) != 0) {
        err = xa_error_new("VDI_IO_ERROR", 1, strerror(errno));
    }
    close(im->fd);
    im->fd = -1;
    if (!err) {
        err = xa_vdi_publish(im->vdi, im->tmp, im->format);
    }
    if (err) {
        xa_log_warn("storage", "import into %s failed: %s", im->vdi, err->code);
        xa_data_fail(im->req, 500, err);
        xa_data_task_finish(im->task, err, NULL);
    } else {
        xa_http_respond(im->req, 200, "text/plain", NULL, 0);
        xa_data_task_finish(im->task, NULL, NULL);
    }
    import_free(im);
    return NULL;
}

static void
import_end(void *state, struct xa_http_request *r, bool complete)
{
    struct import *im = state;
    im->req = r;
    if (complete && im->fill && !flush_buf(im)) {
        complete = false;
    }
    if (complete && im->expected >= 0 && (int64_t)im->pos != im->expected) {
        complete = false;
    }
    if (!complete) {
        struct xa_error *err =
            im->err ? im->err
                    : xa_error_new("VDI_IO_ERROR", 1,
                                   "the upload ended early: the VDI is "
                                   "unchanged");
        im->err = NULL;
        xa_data_fail(r, 500, err);
        xa_data_task_finish(im->task, err, NULL);
        import_free(im);
        return;
    }
    xa_http_suspend(r);
    pthread_t th;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &a, import_finish, im) != 0) {
        import_finish(im);
    }
    pthread_attr_destroy(&a);
}

static const struct xa_http_stream_ops import_ops = {
    .begin = import_begin,
    .data = import_data,
    .end = import_end,
};

/* ---- export -------------------------------------------------------------- */

struct export
{
    int fd;
    int64_t size;
    char *task;
    int64_t next_note;
    uint64_t sent;
};

static long
export_read(void *ctx, uint64_t pos, char *buf, size_t max)
{
    struct export *ex = ctx;
    if ((int64_t)pos >= ex->size) {
        return 0;
    }
    if ((int64_t)(pos + max) > ex->size) {
        max = (size_t)(ex->size - (int64_t)pos);
    }
    ssize_t n;
    do {
        n = pread(ex->fd, buf, max, (off_t)pos);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return -1; /* a short image: cut the connection, never pad */
    }
    ex->sent = pos + (uint64_t)n;
    if ((int64_t)ex->sent >= ex->next_note) {
        ex->next_note += PROGRESS_EVERY;
        if (xa_data_task_cancelling(ex->task)) {
            return -1;
        }
        xa_data_task_progress(ex->task, (double)ex->sent / (double)ex->size);
    }
    return n;
}

static void
export_free(void *ctx)
{
    struct export *ex = ctx;
    close(ex->fd);
    xa_data_task_finish(
        ex->task,
        (int64_t)ex->sent >= ex->size
            ? NULL
            : xa_error_new("VDI_IO_ERROR", 1, "the download was cut short"),
        NULL);
    free(ex->task);
    free(ex);
}

struct export_job {
    struct xa_http_request *req;
    char *vdi, *format, *task;
};

static void *
export_prepare(void *arg)
{
    struct export_job *job = arg;
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    char *loc = NULL;
    struct xa_error *err = xa_vdi_locate(t, job->vdi, &s, &loc);
    xa_db_end(t);
    char *path = NULL;
    bool temporary = false;
    if (!err) {
        err = xa_sr_vdi_export(&s.ctx, loc, job->format, &path, &temporary);
        xa_sr_info_free(&s);
    }
    free(loc);
    int fd = -1;
    struct stat st;
    if (!err) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) != 0) {
            err = xa_error_new("VDI_IO_ERROR", 1, strerror(errno));
        }
        if (temporary) {
            unlink(path); /* gone with the last descriptor */
        }
    }
    free(path);
    if (err) {
        if (fd >= 0) {
            close(fd);
        }
        xa_data_fail(job->req, 500, err);
        xa_data_task_finish(job->task, err, NULL);
        free(job->task);
    } else {
        struct export *ex = xa_calloc(1, sizeof *ex);
        ex->fd = fd;
        ex->size = st.st_size;
        ex->task = job->task;
        ex->next_note = PROGRESS_EVERY;
        if (ex->size == 0) {
            ex->sent = 0;
        }
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        xa_http_add_header(job->req, "Content-Disposition",
                           "attachment; filename=\"disk\"");
        xa_http_respond_stream(job->req, 200, "application/octet-stream",
                               ex->size, export_read, ex, export_free);
    }
    free(job->vdi);
    free(job->format);
    free(job);
    return NULL;
}

static void
export_handler(struct xa_http_request *r, void *ctx)
{
    XA_UNUSED(ctx);
    if (!xa_data_auth(r, "VDI.copy")) {
        return;
    }
    const char *format = xa_http_query(r, "format");
    char *vdi = xa_data_resolve(&xa_cls_VDI, xa_http_query(r, "vdi"));
    if (!vdi) {
        struct xa_error *e = xa_error_handle_invalid(
            "VDI", xa_http_query(r, "vdi") ? xa_http_query(r, "vdi") : "");
        xa_data_fail(r, 404, e);
        xa_error_free(e);
        return;
    }
    struct export_job *job = xa_calloc(1, sizeof *job);
    job->req = r;
    job->vdi = vdi;
    job->format = xa_strdup(format && *format ? format : "raw");
    job->task = xa_data_task(r, "VDI export");
    /* Conversions take a while: off the connection's thread. */
    xa_http_suspend(r);
    pthread_t th;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &a, export_prepare, job) != 0) {
        export_prepare(job);
    }
    pthread_attr_destroy(&a);
}

void
xa_vdi_io_init(void)
{
    xa_http_stream_route("PUT", "/import_raw_vdi", &import_ops, NULL);
    xa_rpc_add_route("GET", "/export_raw_vdi", export_handler, NULL);
}
