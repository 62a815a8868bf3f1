/* nfs.c - SR type "nfs": mounts device_config:server + :serverpath
 * (options from :nfsversion and :options) on the SR's directory,
 * <state-dir>/sr/<uuid>, and is from then on the image directory of
 * storage/imgdir there, shared across the pool.  Unlike SM's nfs driver
 * the images sit at the top of the export rather than in a per-SR
 * subdirectory, so an export carries one SR. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/imgdir/imgdir.h"

static const char *
dc_get(const struct xa_value *dc, const char *key)
{
    const char *v = dc ? xa_struct_get_str(dc, key) : NULL;
    return v && *v ? v : NULL;
}

/* Whether something is mounted on 'path' (per /proc/self/mounts). */
static bool
mounted(const char *path)
{
    FILE *f = fopen("/proc/self/mounts", "r");
    char line[4096];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f)) {
        char *sp = strchr(line, ' ');
        if (sp) {
            char *mp = sp + 1;
            mp[strcspn(mp, " ")] = '\0';
            found = strcmp(mp, path) == 0;
        }
    }
    if (f) {
        fclose(f);
    }
    return found;
}

static struct xa_error *
mount_share(const struct xa_value *dc, const char *on)
{
    const char *server = dc_get(dc, "server");
    const char *spath = dc_get(dc, "serverpath");
    if (!server || !spath || server[0] == '-' || spath[0] != '/') {
        return xa_error_new("SR_BACKEND_FAILURE", 3, "1", "",
                            "device_config needs server and an absolute "
                            "serverpath");
    }
    const char *vers = dc_get(dc, "nfsversion");
    const char *extra = dc_get(dc, "options");
    char *opts =
        xa_asprintf("soft,timeo=200,retrans=4%s%s%s%s", vers ? ",vers=" : "",
                    vers ? vers : "", extra ? "," : "", extra ? extra : "");
    char *src = xa_asprintf("%s:%s", server, spath);
    const char *argv[] = {"mount", "-t", "nfs", "-o", opts, src, on, NULL};
    struct xa_error *err = xa_imgdir_run(NULL, argv, NULL);
    free(opts);
    free(src);
    return err;
}

static struct xa_error *
nfs_attach(const struct xa_sr_ctx *sr)
{
    if (xa_imgdir_mkdir_p(sr->path) != 0) {
        return xa_imgdir_failure("cannot create", sr->path, errno);
    }
    if (!mounted(sr->path)) {
        struct xa_error *err = mount_share(sr->device_config, sr->path);
        if (err) {
            return err;
        }
    }
    return xa_imgdir_attach(sr);
}

static struct xa_error *
nfs_detach(const struct xa_sr_ctx *sr)
{
    if (!mounted(sr->path)) {
        return NULL;
    }
    const char *argv[] = {"umount", sr->path, NULL};
    return xa_imgdir_run(NULL, argv, NULL);
}

static struct xa_error *
nfs_probe(const struct xa_value *dc, char **xml)
{
    char dir[] = "/tmp/xapid-probe-XXXXXX";
    if (!mkdtemp(dir)) {
        return xa_imgdir_failure("cannot create", dir, errno);
    }
    struct xa_error *err = mount_share(dc, dir);
    if (!err) {
        *xml = xa_imgdir_probe_dir(dir);
        const char *argv[] = {"umount", dir, NULL};
        xa_error_free(xa_imgdir_run(NULL, argv, NULL));
    }
    rmdir(dir);
    return err;
}

const struct xa_sr_driver xa_sr_nfs_driver = {
    .type = "nfs",
    .content_type = "user",
    .shareable = true,
    .attach = nfs_attach,
    .detach = nfs_detach,
    .probe = nfs_probe,
    XA_IMGDIR_ENTRIES,
};
