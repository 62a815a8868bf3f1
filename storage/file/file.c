/* file.c - SR backend: a local directory of sparse raw images.
 *
 * Each VDI is "<sr path>/<vdi uuid>.img", a sparse raw file; its location
 * is the VDI's uuid, as on xapi's ext SRs.  Clones and snapshots are
 * reflinks where the filesystem offers them and otherwise copies of the
 * allocated extents only, so copying an empty 10 GiB disk costs nothing.
 * Serves the SR types "file" and "ext" (xapi's local default type). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "storage/sr-driver.h"

static struct xa_error *
backend_failure(const char *what, const char *path, int e)
{
    char *msg = xa_asprintf("%s %s: %s", what, path, strerror(e));
    struct xa_error *err = xa_error_new("SR_BACKEND_FAILURE", 3, "1", "", msg);
    free(msg);
    return err;
}

static char *
image_path(const struct xa_sr_ctx *sr, const char *location)
{
    return xa_asprintf("%s/%s.img", sr->path, location);
}

/* Creates 'path' and its missing parents. */
static int
mkdir_p(const char *path)
{
    char *p = xa_strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                free(p);
                return -1;
            }
            *s = '/';
        }
    }
    int rc = mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

static struct xa_error *
file_attach(const struct xa_sr_ctx *sr)
{
    if (mkdir_p(sr->path) != 0) {
        return backend_failure("cannot create", sr->path, errno);
    }
    return NULL;
}

static struct xa_error *
file_detach(const struct xa_sr_ctx *sr)
{
    XA_UNUSED(sr); /* nothing is mounted */
    return NULL;
}

static struct xa_error *
file_stat(const struct xa_sr_ctx *sr, struct xa_sr_stat *out)
{
    struct statvfs vfs;
    if (statvfs(sr->path, &vfs) != 0) {
        return backend_failure("cannot stat", sr->path, errno);
    }
    out->physical_size = (int64_t)vfs.f_blocks * (int64_t)vfs.f_frsize;
    /* What the filesystem has in use, as SM reports for ext SRs: space
     * the SR's files share with anything else on the same disk. */
    out->physical_utilisation =
        (int64_t)(vfs.f_blocks - vfs.f_bavail) * (int64_t)vfs.f_frsize;
    return NULL;
}

static void
fill_vdi(const char *location, const struct stat *st, struct xa_sr_vdi *out)
{
    out->location = xa_strdup(location);
    out->virtual_size = st->st_size;
    out->physical_utilisation = (int64_t)st->st_blocks * 512;
}

static struct xa_error *
file_scan(const struct xa_sr_ctx *sr, struct xa_sr_vdi **out, size_t *n)
{
    DIR *d = opendir(sr->path);
    if (!d) {
        return backend_failure("cannot open", sr->path, errno);
    }
    size_t cap = 16, count = 0;
    struct xa_sr_vdi *a = xa_calloc(cap, sizeof *a);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len != 36 + 4 || strcmp(e->d_name + 36, ".img") != 0) {
            continue;
        }
        char uuid[37];
        memcpy(uuid, e->d_name, 36);
        uuid[36] = '\0';
        struct stat st;
        char *p = image_path(sr, uuid);
        int rc = stat(p, &st);
        free(p);
        if (rc != 0) {
            continue;
        }
        if (count == cap) {
            cap *= 2;
            a = xa_realloc(a, cap * sizeof *a);
        }
        fill_vdi(uuid, &st, &a[count++]);
    }
    closedir(d);
    *out = a;
    *n = count;
    return NULL;
}

static struct xa_error *
file_vdi_create(const struct xa_sr_ctx *sr, const char *vdi_uuid, int64_t size,
                struct xa_sr_vdi *out)
{
    char *p = image_path(sr, vdi_uuid);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, size) != 0) {
        struct xa_error *err = backend_failure("cannot create", p, errno);
        if (fd >= 0) {
            close(fd);
            unlink(p);
        }
        free(p);
        return err;
    }
    struct stat st;
    fstat(fd, &st);
    close(fd);
    free(p);
    fill_vdi(vdi_uuid, &st, out);
    return NULL;
}

static struct xa_error *
file_vdi_destroy(const struct xa_sr_ctx *sr, const char *location)
{
    char *p = image_path(sr, location);
    struct xa_error *err = NULL;
    if (unlink(p) != 0 && errno != ENOENT) {
        err = backend_failure("cannot remove", p, errno);
    }
    free(p);
    return err;
}

/* Copies the allocated extents of 'in' to 'out' (same size, sparse). */
static int
copy_extents(int in, int out, off_t size)
{
    off_t pos = 0;
    while (pos < size) {
        off_t data = lseek(in, pos, SEEK_DATA);
        if (data < 0) {
            break; /* ENXIO: only a hole remains */
        }
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0) {
            hole = size;
        }
        off_t src = data, dst = data;
        while (src < hole) {
            ssize_t n =
                copy_file_range(in, &src, out, &dst, (size_t)(hole - src), 0);
            if (n <= 0) {
                return -1;
            }
        }
        pos = hole;
    }
    return 0;
}

static struct xa_error *
copy_file(const char *from, const char *to, struct xa_sr_vdi *out,
          const char *new_uuid)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return backend_failure("cannot open", from, errno);
    }
    struct stat st;
    fstat(in, &st);
    int o = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (o < 0) {
        struct xa_error *err = backend_failure("cannot create", to, errno);
        close(in);
        return err;
    }
    int rc = 0;
    if (ioctl(o, FICLONE, in) != 0) {
        rc = ftruncate(o, st.st_size) != 0 ? -1
                                           : copy_extents(in, o, st.st_size);
    }
    int e = errno;
    close(in);
    if (rc != 0) {
        close(o);
        unlink(to);
        return backend_failure("cannot copy to", to, e);
    }
    struct stat nst;
    fstat(o, &nst);
    close(o);
    fill_vdi(new_uuid, &nst, out);
    return NULL;
}

static struct xa_error *
file_vdi_clone(const struct xa_sr_ctx *sr, const char *location,
               const char *new_uuid, struct xa_sr_vdi *out)
{
    char *from = image_path(sr, location);
    char *to = image_path(sr, new_uuid);
    struct xa_error *err = copy_file(from, to, out, new_uuid);
    free(from);
    free(to);
    return err;
}

static struct xa_error *
file_vdi_copy(const struct xa_sr_ctx *src, const char *location,
              const struct xa_sr_ctx *dst, const char *new_uuid,
              struct xa_sr_vdi *out)
{
    char *from = image_path(src, location);
    char *to = image_path(dst, new_uuid);
    struct xa_error *err = copy_file(from, to, out, new_uuid);
    free(from);
    free(to);
    return err;
}

static struct xa_error *
file_vdi_resize(const struct xa_sr_ctx *sr, const char *location,
                int64_t new_size, struct xa_sr_vdi *out)
{
    char *p = image_path(sr, location);
    struct stat st;
    struct xa_error *err = NULL;
    if (truncate(p, new_size) != 0 || stat(p, &st) != 0) {
        err = backend_failure("cannot resize", p, errno);
    } else {
        fill_vdi(location, &st, out);
    }
    free(p);
    return err;
}

static struct xa_error *
file_vdi_attach(const struct xa_sr_ctx *sr, const char *location,
                bool read_only, char **path, char **format)
{
    XA_UNUSED(read_only);
    char *p = image_path(sr, location);
    if (access(p, F_OK) != 0) {
        struct xa_error *err =
            xa_error_new("VDI_MISSING", 2, sr->uuid, location);
        free(p);
        return err;
    }
    *path = p;
    *format = xa_strdup("raw");
    return NULL;
}

static struct xa_error *
file_vdi_detach(const struct xa_sr_ctx *sr, const char *location)
{
    XA_UNUSED(sr);
    XA_UNUSED(location);
    return NULL;
}

#define FILE_ENTRIES                                                 \
    .attach = file_attach, .detach = file_detach, .stat = file_stat, \
    .scan = file_scan, .vdi_create = file_vdi_create,                \
    .vdi_destroy = file_vdi_destroy, .vdi_clone = file_vdi_clone,    \
    .vdi_snapshot = file_vdi_clone, .vdi_resize = file_vdi_resize,   \
    .vdi_copy = file_vdi_copy, .vdi_attach = file_vdi_attach,        \
    .vdi_detach = file_vdi_detach

const struct xa_sr_driver xa_sr_file_driver = {.type = "file", FILE_ENTRIES};
const struct xa_sr_driver xa_sr_ext_driver = {.type = "ext", FILE_ENTRIES};
