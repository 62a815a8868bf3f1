/* iso.c - SR type "iso": a read-only library of .iso files in the
 * directory device_config:location.  SR.scan lists the files as VDIs
 * (location = file name); VBDs of type CD insert and eject them.  Nothing
 * here writes to the directory. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "storage/imgdir/imgdir.h"

static bool
is_iso_name(const char *name)
{
    size_t n = strlen(name);
    return xa_imgdir_valid_name(name) && n > 4 &&
           strcasecmp(name + n - 4, ".iso") == 0;
}

/* Fills 'out' for ISO 'name' (a regular file, never via a symlink). */
static int
iso_fill(const struct xa_sr_ctx *sr, const char *name, struct xa_sr_vdi *out)
{
    char *p = xa_asprintf("%s/%s", sr->path, name);
    struct stat st;
    int rc = lstat(p, &st);
    free(p);
    if (rc != 0 || !S_ISREG(st.st_mode)) {
        return -1;
    }
    out->location = xa_strdup(name);
    out->virtual_size = st.st_size;
    out->physical_utilisation = st.st_size;
    out->read_only = true;
    return 0;
}

static struct xa_error *
iso_attach(const struct xa_sr_ctx *sr)
{
    struct stat st;
    if (stat(sr->path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return xa_imgdir_failure("no ISO directory at", sr->path,
                                 errno ? errno : ENOTDIR);
    }
    return NULL;
}

static struct xa_error *
iso_nothing(const struct xa_sr_ctx *sr)
{
    XA_UNUSED(sr);
    return NULL;
}

static struct xa_error *
iso_probe(const struct xa_value *dc, char **xml)
{
    const char *dir = dc ? xa_struct_get_str(dc, "location") : NULL;
    struct stat st;
    if (!dir || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return xa_error_new("SR_BACKEND_FAILURE", 3, "1", "",
                            "device_config:location is not a directory");
    }
    *xml = xa_strdup("<?xml version=\"1.0\" ?>\n<SRlist>\n</SRlist>\n");
    return NULL;
}

static struct xa_error *
iso_stat(const struct xa_sr_ctx *sr, struct xa_sr_stat *out)
{
    struct statvfs vfs;
    if (statvfs(sr->path, &vfs) != 0) {
        return xa_imgdir_failure("cannot stat", sr->path, errno);
    }
    out->physical_size = (int64_t)vfs.f_blocks * (int64_t)vfs.f_frsize;
    out->physical_utilisation =
        (int64_t)(vfs.f_blocks - vfs.f_bavail) * (int64_t)vfs.f_frsize;
    return NULL;
}

static struct xa_error *
iso_scan(const struct xa_sr_ctx *sr, struct xa_sr_vdi **out, size_t *n)
{
    DIR *d = opendir(sr->path);
    if (!d) {
        return xa_imgdir_failure("cannot open", sr->path, errno);
    }
    size_t cap = 16, count = 0;
    struct xa_sr_vdi *a = xa_calloc(cap, sizeof *a);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!is_iso_name(e->d_name)) {
            continue;
        }
        if (count == cap) {
            cap *= 2;
            a = xa_realloc(a, cap * sizeof *a);
        }
        if (iso_fill(sr, e->d_name, &a[count]) == 0) {
            count++;
        }
    }
    closedir(d);
    *out = a;
    *n = count;
    return NULL;
}

static struct xa_error *
iso_vdi_stat(const struct xa_sr_ctx *sr, const char *location,
             struct xa_sr_vdi *out)
{
    if (!location || !is_iso_name(location)) {
        return xa_error_invalid_value("location", location ? location : "");
    }
    if (iso_fill(sr, location, out) != 0) {
        return xa_error_new("VDI_MISSING", 2, sr->uuid, location);
    }
    return NULL;
}

static struct xa_error *
iso_vdi_attach(const struct xa_sr_ctx *sr, const char *location, bool read_only,
               char **path, char **format)
{
    XA_UNUSED(read_only); /* always read-only */
    struct xa_sr_vdi v = {0};
    struct xa_error *err = iso_vdi_stat(sr, location, &v);
    if (err) {
        return err;
    }
    free(v.location);
    *path = xa_asprintf("%s/%s", sr->path, location);
    *format = xa_strdup("raw");
    return NULL;
}

static struct xa_error *
iso_vdi_detach(const struct xa_sr_ctx *sr, const char *location)
{
    XA_UNUSED(sr);
    XA_UNUSED(location);
    return NULL;
}

static struct xa_error *
iso_vdi_export(const struct xa_sr_ctx *sr, const char *location,
               const char *format, char **path, bool *temporary)
{
    if (strcmp(format, "raw") != 0) {
        return xa_error_new("VALUE_NOT_SUPPORTED", 3, "format", format,
                            "ISO images export as raw");
    }
    char *fmt = NULL;
    struct xa_error *err = iso_vdi_attach(sr, location, true, path, &fmt);
    free(fmt);
    *temporary = false;
    return err;
}

const struct xa_sr_driver xa_sr_iso_driver = {
    .type = "iso",
    .content_type = "iso",
    .shareable = true,
    .attach = iso_attach,
    .detach = iso_nothing,
    .create = iso_nothing,
    .destroy = iso_nothing, /* the library is the user's: never removed */
    .probe = iso_probe,
    .stat = iso_stat,
    .scan = iso_scan,
    .vdi_stat = iso_vdi_stat,
    .vdi_attach = iso_vdi_attach,
    .vdi_detach = iso_vdi_detach,
    .vdi_export = iso_vdi_export,
};
