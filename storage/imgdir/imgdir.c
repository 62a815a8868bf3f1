/* imgdir.c - see imgdir.h. */
#include "storage/imgdir/imgdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MARKER    ".xapid-sr"
#define LOCKFILE  ".xapid-lock"
#define BASE_PFX  ".base-"
#define TMP_PFX   ".tmp-"
#define NAME_MAX_ 200
/* Output kept from a failed command, for the error. */
#define ERR_KEEP  2048

struct xa_error *
xa_imgdir_failure(const char *what, const char *path, int e)
{
    char *msg = xa_asprintf("%s %s: %s", what, path, strerror(e));
    struct xa_error *err = xa_error_new("SR_BACKEND_FAILURE", 3, "1", "", msg);
    free(msg);
    return err;
}

static struct xa_error *
io_error(const char *msg)
{
    return xa_error_new("VDI_IO_ERROR", 1, msg);
}

bool
xa_imgdir_valid_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > NAME_MAX_ || name[0] == '.') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

int
xa_imgdir_mkdir_p(const char *path)
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

/* ---- running qemu-img and friends ------------------------------------- */

struct xa_error *
xa_imgdir_run(const char *cwd, const char *const argv[], char **out)
{
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0) {
        return xa_imgdir_failure("cannot run", argv[0], errno);
    }
    if (pipe2(pe, O_CLOEXEC) != 0) {
        int e = errno;
        close(po[0]);
        close(po[1]);
        return xa_imgdir_failure("cannot run", argv[0], e);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    if (cwd) {
        posix_spawn_file_actions_addchdir_np(&fa, cwd);
    }
    pid_t pid;
    int rc =
        posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        close(po[0]);
        close(pe[0]);
        return xa_imgdir_failure("cannot run", argv[0], rc);
    }
    struct xa_buf bo = {0}, be = {0};
    struct pollfd pf[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    char chunk[4096];
    while (open_fds > 0) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !pf[i].revents) {
                continue;
            }
            ssize_t n = read(pf[i].fd, chunk, sizeof chunk);
            if (n > 0) {
                struct xa_buf *b = i == 0 ? &bo : &be;
                if (b->len < (i == 0 ? 1024 * 1024 : ERR_KEEP)) {
                    xa_buf_append(b, chunk, (size_t)n);
                }
            } else if (n == 0 || errno != EINTR) {
                close(pf[i].fd);
                pf[i].fd = -1;
                open_fds--;
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    struct xa_error *err = NULL;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        struct xa_buf cmd = {0};
        for (const char *const *a = argv; *a; a++) {
            xa_buf_printf(&cmd, "%s%s", a == argv ? "" : " ", *a);
        }
        char code[16];
        snprintf(code, sizeof code, "%d",
                 WIFEXITED(status) ? WEXITSTATUS(status) : 128);
        char *msg = xa_asprintf("%s: %s", cmd.data,
                                be.data   ? be.data
                                : bo.data ? bo.data
                                          : "");
        size_t l = strlen(msg);
        while (l && (msg[l - 1] == '\n' || msg[l - 1] == '\r')) {
            msg[--l] = '\0';
        }
        err = xa_error_new("SR_BACKEND_FAILURE", 3, code, "", msg);
        free(msg);
        xa_buf_free(&cmd);
    } else if (out) {
        *out = xa_buf_steal(&bo);
    }
    xa_buf_free(&bo);
    xa_buf_free(&be);
    return err;
}

/* ---- images ------------------------------------------------------------ */

struct image {
    char name[NAME_MAX_ + 32]; /* file name inside the directory */
    bool qcow2;
    int64_t size;                 /* virtual size */
    char backing[NAME_MAX_ + 32]; /* "" when none */
    uint64_t incompat;            /* qcow2 incompatible feature bits */
    int64_t used;                 /* bytes allocated */
};

static uint64_t
be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static bool
ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Reads what we need of image 'name' in 'dir' (never through a symlink):
 * 0, or -1 with errno (EINVAL: not a regular file or a bad qcow2). */
static int
read_image(const char *dir, const char *name, struct image *im)
{
    memset(im, 0, sizeof *im);
    if (strlen(name) >= sizeof im->name) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(im->name, name);
    char *p = xa_asprintf("%s/%s", dir, name);
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    free(p);
    if (fd < 0) {
        if (errno == ELOOP) {
            errno = EINVAL; /* a symlink: never followed */
        }
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    im->used = (int64_t)st.st_blocks * 512;
    im->qcow2 = ends_with(name, ".qcow2");
    if (!im->qcow2) {
        im->size = st.st_size;
        close(fd);
        return 0;
    }
    unsigned char h[104];
    ssize_t n = pread(fd, h, sizeof h, 0);
    if (n < 72 || memcmp(h, "QFI\xfb", 4) != 0) {
        /* Something wrote raw data over the image (a hypervisor saving a
         * domain's memory into a suspend VDI): raw is what it now is. */
        im->qcow2 = false;
        im->size = st.st_size;
        close(fd);
        return 0;
    }
    uint64_t boff = be64(h + 8);
    uint32_t blen = be32(h + 16);
    im->size = (int64_t)be64(h + 24);
    im->incompat = be32(h + 4) >= 3 && n >= 80 ? be64(h + 72) : 0;
    if (boff) {
        if (blen >= sizeof im->backing ||
            pread(fd, im->backing, blen, (off_t)boff) != (ssize_t)blen) {
            close(fd);
            errno = EINVAL;
            return -1;
        }
        im->backing[blen] = '\0';
    }
    close(fd);
    return 0;
}

/* The format of a file by its name: for bases, which nothing writes. */
static const char *
fmt_of(const char *name)
{
    return ends_with(name, ".qcow2") ? "qcow2" : "raw";
}

static const char *
fmt_im(const struct image *im)
{
    return im->qcow2 ? "qcow2" : "raw";
}

/* The image of VDI 'loc': "<loc>.img" when present (see publish: a raw
 * import lands there before the qcow2 it replaces goes), else
 * "<loc>.qcow2".  VDI_MISSING when neither is a regular file. */
static struct xa_error *
find_leaf(const struct xa_sr_ctx *sr, const char *loc, struct image *im)
{
    if (!xa_imgdir_valid_name(loc)) {
        return xa_error_invalid_value("location", loc ? loc : "");
    }
    static const char *const exts[] = {".img", ".qcow2"};
    for (size_t i = 0; i < XA_ARRAY_SIZE(exts); i++) {
        char *name = xa_asprintf("%s%s", loc, exts[i]);
        int rc = read_image(sr->path, name, im);
        int e = errno;
        free(name);
        if (rc == 0) {
            return NULL;
        }
        if (e != ENOENT) {
            return xa_imgdir_failure("cannot use image", loc, e);
        }
    }
    return xa_error_new("VDI_MISSING", 2, sr->uuid, loc);
}

static void
fill_vdi(const char *loc, const struct image *im, struct xa_sr_vdi *out)
{
    out->location = xa_strdup(loc);
    out->virtual_size = im->size;
    out->physical_utilisation = im->used;
    out->read_only = false;
}

/* Reads the image 'name' that an operation has just written and
 * describes it in 'out' as the VDI at 'loc'. */
static struct xa_error *
read_back(const struct xa_sr_ctx *sr, const char *name, const char *loc,
          struct xa_sr_vdi *out)
{
    struct image im;
    if (read_image(sr->path, name, &im) != 0) {
        return xa_imgdir_failure("cannot read back", name, errno);
    }
    fill_vdi(loc, &im, out);
    return NULL;
}

static char *
in_dir(const struct xa_sr_ctx *sr, const char *name)
{
    return xa_asprintf("%s/%s", sr->path, name);
}

/* A fresh name for an internal file: "<prefix><uuid><ext>". */
static char *
fresh_name(const char *prefix, const char *ext)
{
    char u[37];
    xa_uuid_generate(u);
    return xa_asprintf("%s%s%s", prefix, u, ext);
}

/* Takes the SR's tree lock (shared SRs: across hosts too); -1 on error. */
static int
lock_tree(const struct xa_sr_ctx *sr, struct xa_error **err)
{
    char *p = in_dir(sr, LOCKFILE);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        *err = xa_imgdir_failure("cannot lock", p, errno);
        if (fd >= 0) {
            close(fd);
        }
        fd = -1;
    }
    free(p);
    return fd;
}

static void
unlock_tree(int fd)
{
    if (fd >= 0) {
        close(fd); /* drops the flock */
    }
}

static void
unlink_in(const struct xa_sr_ctx *sr, const char *name)
{
    char *p = in_dir(sr, name);
    unlink(p);
    free(p);
}

static int
rename_in(const struct xa_sr_ctx *sr, const char *from, const char *to)
{
    char *a = in_dir(sr, from), *b = in_dir(sr, to);
    int rc = rename(a, b);
    free(a);
    free(b);
    return rc;
}

/* Makes a file's content durable before a rename publishes it. */
static void
sync_file(const struct xa_sr_ctx *sr, const char *name)
{
    char *p = in_dir(sr, name);
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(p);
}

static void
sync_dir(const struct xa_sr_ctx *sr)
{
    int fd = open(sr->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static struct xa_error *
qemu_img(const struct xa_sr_ctx *sr, const char *const argv[], char **out)
{
    return xa_imgdir_run(sr->path, argv, out);
}

/* Names of the images (hidden bases included, transfers not) whose
 * backing file is 'base'; returns how many, the first in 'child'. */
static size_t
children_of(const struct xa_sr_ctx *sr, const char *base, char *child,
            size_t child_len)
{
    DIR *d = opendir(sr->path);
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (!ends_with(e->d_name, ".qcow2") ||
            strncmp(e->d_name, TMP_PFX, strlen(TMP_PFX)) == 0) {
            continue;
        }
        struct image im;
        if (read_image(sr->path, e->d_name, &im) == 0 &&
            strcmp(im.backing, base) == 0) {
            if (n++ == 0) {
                snprintf(child, child_len, "%s", e->d_name);
            }
        }
    }
    if (d) {
        closedir(d);
    }
    return n;
}

/* After an image backed by hidden base 'name' went: removes the bases
 * nothing needs any more and merges a base left with a single child into
 * it.  Holds the tree lock.  Failures leave a valid (longer) chain. */
static void
collect_bases(const struct xa_sr_ctx *sr, const char *name)
{
    char cur[NAME_MAX_ + 32];
    snprintf(cur, sizeof cur, "%s", name);
    while (strncmp(cur, BASE_PFX, strlen(BASE_PFX)) == 0) {
        struct image base;
        if (read_image(sr->path, cur, &base) != 0) {
            return;
        }
        char child[NAME_MAX_ + 32] = "";
        size_t n = children_of(sr, cur, child, sizeof child);
        if (n == 0) {
            unlink_in(sr, cur);
            snprintf(cur, sizeof cur, "%s", base.backing);
            continue;
        }
        if (n == 1) {
            /* Safe-mode rebase copies into the child whatever differs
             * between this base and the base's own backing (all of it when
             * there is none), so the child reads the same afterwards. */
            const char *argv[] = {
                "qemu-img",
                "rebase",
                "-q",
                "-f",
                "qcow2",
                "-b",
                base.backing,
                "-F",
                base.backing[0] ? fmt_of(base.backing) : "raw",
                child,
                NULL};
            if (!base.backing[0]) {
                argv[7] = child; /* no -F without a backing file */
                argv[8] = NULL;
            }
            struct xa_error *err = qemu_img(sr, argv, NULL);
            if (err) {
                xa_error_free(err); /* in use (image locked): later */
                return;
            }
            sync_file(sr, child);
            unlink_in(sr, cur);
        }
        return;
    }
}

/* ---- the SR ------------------------------------------------------------ */

struct xa_error *
xa_imgdir_attach(const struct xa_sr_ctx *sr)
{
    if (xa_imgdir_mkdir_p(sr->path) != 0) {
        return xa_imgdir_failure("cannot create", sr->path, errno);
    }
    struct stat st;
    if (stat(sr->path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return xa_imgdir_failure("not a directory:", sr->path, ENOTDIR);
    }
    return NULL;
}

struct xa_error *
xa_imgdir_detach(const struct xa_sr_ctx *sr)
{
    XA_UNUSED(sr);
    return NULL;
}

struct xa_error *
xa_imgdir_create(const struct xa_sr_ctx *sr)
{
    char *p = in_dir(sr, MARKER);
    FILE *f = fopen(p, "wx");
    if (!f) {
        /* A directory that already carries an SR is kept as it is only
         * when it is this SR's (a re-create after a failure). */
        char have[64] = "";
        FILE *r = fopen(p, "r");
        if (r) {
            if (!fgets(have, sizeof have, r)) {
                have[0] = '\0';
            }
            fclose(r);
        }
        have[strcspn(have, "\n")] = '\0';
        struct xa_error *err =
            strcmp(have, sr->uuid) == 0
                ? NULL
                : xa_error_new("SR_BACKEND_FAILURE", 3, "1", "",
                               "the directory already holds another SR");
        free(p);
        return err;
    }
    fprintf(f, "%s\n", sr->uuid);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    fclose(f);
    struct xa_error *err =
        bad ? xa_imgdir_failure("cannot write", p, errno) : NULL;
    free(p);
    return err;
}

static bool
ours(const char *name)
{
    return strcmp(name, MARKER) == 0 || strcmp(name, LOCKFILE) == 0 ||
           ends_with(name, ".qcow2") || ends_with(name, ".img") ||
           strncmp(name, TMP_PFX, strlen(TMP_PFX)) == 0;
}

struct xa_error *
xa_imgdir_destroy(const struct xa_sr_ctx *sr)
{
    DIR *d = opendir(sr->path);
    if (!d) {
        return errno == ENOENT
                   ? NULL
                   : xa_imgdir_failure("cannot open", sr->path, errno);
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (ours(e->d_name)) {
            unlink_in(sr, e->d_name);
        }
    }
    closedir(d);
    rmdir(sr->path); /* fails, harmlessly, when other files remain */
    return NULL;
}

char *
xa_imgdir_probe_dir(const char *dir)
{
    struct xa_buf b = {0};
    xa_buf_puts(&b, "<?xml version=\"1.0\" ?>\n<SRlist>\n");
    char *p = xa_asprintf("%s/%s", dir, MARKER);
    FILE *f = fopen(p, "r");
    free(p);
    char uuid[64];
    if (f && fgets(uuid, sizeof uuid, f)) {
        uuid[strcspn(uuid, "\n")] = '\0';
        if (xa_uuid_valid(uuid)) {
            xa_buf_printf(&b, "\t<SR>\n\t\t<UUID>%s</UUID>\n\t</SR>\n", uuid);
        }
    }
    if (f) {
        fclose(f);
    }
    xa_buf_puts(&b, "</SRlist>\n");
    return xa_buf_steal(&b);
}

struct xa_error *
xa_imgdir_probe(const struct xa_value *dc, char **xml)
{
    const char *dir = dc ? xa_struct_get_str(dc, "location") : NULL;
    if (!dir && dc) {
        dir = xa_struct_get_str(dc, "path");
    }
    if (!dir || !*dir) {
        return xa_error_new("SR_BACKEND_FAILURE", 3, "1", "",
                            "device_config:location is required");
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return xa_imgdir_failure("cannot probe", dir, errno ? errno : ENOTDIR);
    }
    *xml = xa_imgdir_probe_dir(dir);
    return NULL;
}

struct xa_error *
xa_imgdir_stat(const struct xa_sr_ctx *sr, struct xa_sr_stat *out)
{
    struct statvfs vfs;
    if (statvfs(sr->path, &vfs) != 0) {
        return xa_imgdir_failure("cannot stat", sr->path, errno);
    }
    out->physical_size = (int64_t)vfs.f_blocks * (int64_t)vfs.f_frsize;
    /* What the filesystem has in use, as SM reports for ext SRs: space
     * the SR's files share with anything else on the same disk. */
    out->physical_utilisation =
        (int64_t)(vfs.f_blocks - vfs.f_bavail) * (int64_t)vfs.f_frsize;
    return NULL;
}

struct xa_error *
xa_imgdir_scan(const struct xa_sr_ctx *sr, struct xa_sr_vdi **out, size_t *n)
{
    DIR *d = opendir(sr->path);
    if (!d) {
        return xa_imgdir_failure("cannot open", sr->path, errno);
    }
    size_t cap = 16, count = 0;
    struct xa_sr_vdi *a = xa_calloc(cap, sizeof *a);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *ext = ends_with(e->d_name, ".qcow2") ? ".qcow2"
                          : ends_with(e->d_name, ".img") ? ".img"
                                                         : NULL;
        if (!ext) {
            continue;
        }
        char *stem = xa_strndup(e->d_name, strlen(e->d_name) - strlen(ext));
        bool dup = false;
        for (size_t i = 0; i < count && !dup; i++) {
            dup = strcmp(a[i].location, stem) == 0;
        }
        struct image im;
        struct xa_error *skip = NULL;
        if (dup || !xa_imgdir_valid_name(stem) ||
            (skip = find_leaf(sr, stem, &im)) != NULL) {
            /* (find_leaf's error, if any, is only a skipped entry.) */
            xa_error_free(skip);
            free(stem);
            continue;
        }
        if (count == cap) {
            cap *= 2;
            a = xa_realloc(a, cap * sizeof *a);
        }
        fill_vdi(stem, &im, &a[count++]);
        free(stem);
    }
    closedir(d);
    *out = a;
    *n = count;
    return NULL;
}

/* ---- VDIs -------------------------------------------------------------- */

static char *
size_arg(int64_t size)
{
    return xa_asprintf("%" PRId64, size);
}

struct xa_error *
xa_imgdir_vdi_create(const struct xa_sr_ctx *sr, const char *vdi_uuid,
                     int64_t size, struct xa_sr_vdi *out)
{
    if (!xa_imgdir_valid_name(vdi_uuid)) {
        return xa_error_invalid_value("location", vdi_uuid);
    }
    struct xa_error *err = NULL;
    int lk = lock_tree(sr, &err);
    if (lk < 0) {
        return err;
    }
    struct image im;
    struct xa_error *absent = find_leaf(sr, vdi_uuid, &im);
    if (!absent) {
        unlock_tree(lk);
        return xa_error_new("SR_BACKEND_FAILURE", 3, "1", "",
                            "an image with this name exists");
    }
    xa_error_free(absent); /* the expected case: the name is free */
    char *tmp = fresh_name(TMP_PFX, ".qcow2");
    char *sz = size_arg(size);
    const char *argv[] = {"qemu-img", "create", "-q", "-f",
                          "qcow2",    tmp,      sz,   NULL};
    err = qemu_img(sr, argv, NULL);
    char *name = xa_asprintf("%s.qcow2", vdi_uuid);
    if (!err && rename_in(sr, tmp, name) != 0) {
        err = xa_imgdir_failure("cannot create", name, errno);
    }
    if (err) {
        unlink_in(sr, tmp);
    } else {
        sync_dir(sr);
        err = read_back(sr, name, vdi_uuid, out);
    }
    unlock_tree(lk);
    free(tmp);
    free(sz);
    free(name);
    return err;
}

struct xa_error *
xa_imgdir_vdi_destroy(const struct xa_sr_ctx *sr, const char *location)
{
    struct xa_error *err = NULL;
    int lk = lock_tree(sr, &err);
    if (lk < 0) {
        return err;
    }
    struct image im;
    err = find_leaf(sr, location, &im);
    if (err && strcmp(err->code, "VDI_MISSING") == 0) {
        xa_error_free(err); /* already gone: destroying it succeeds */
        unlock_tree(lk);
        return NULL;
    }
    if (err && strcmp(err->code, "SR_BACKEND_FAILURE") == 0) {
        /* An image that no longer parses (something wrote over it: the
         * simulated hypervisor's suspend images do) is still removable;
         * it is nobody's base, since bases are never written. */
        xa_error_free(err);
        err = NULL;
        memset(&im, 0, sizeof im);
        snprintf(im.name, sizeof im.name, "%s.img", location);
    }
    if (!err) {
        /* Both names, in case an interrupted import left the two. */
        char *a = xa_asprintf("%s.img", location);
        char *b = xa_asprintf("%s.qcow2", location);
        struct image other;
        char backing2[sizeof other.backing] = "";
        if (strcmp(im.name, a) == 0 && read_image(sr->path, b, &other) == 0) {
            snprintf(backing2, sizeof backing2, "%s", other.backing);
        }
        char *pa = in_dir(sr, a), *pb = in_dir(sr, b);
        if ((unlink(pa) != 0 && errno != ENOENT) ||
            (unlink(pb) != 0 && errno != ENOENT)) {
            err = xa_imgdir_failure("cannot remove", location, errno);
        }
        free(pa);
        free(pb);
        free(a);
        free(b);
        if (!err) {
            sync_dir(sr);
            if (im.backing[0]) {
                collect_bases(sr, im.backing);
            }
            if (backing2[0]) {
                collect_bases(sr, backing2);
            }
        }
    }
    unlock_tree(lk);
    return err;
}

/* VDI_IN_USE unless 'name' can be opened for writing, i.e. no running
 * domain holds qemu's lock on it: renaming an image a domain writes to
 * would send its writes into the snapshot. */
static struct xa_error *
check_unlocked(const struct xa_sr_ctx *sr, const struct image *im,
               const char *loc)
{
    /* info takes qemu's shared locks, which a running domain's exclusive
     * write permission denies. */
    const char *argv[] = {"qemu-img", "info", "-f", fmt_im(im), im->name, NULL};
    struct xa_error *err = qemu_img(sr, argv, NULL);
    if (err && err->n_params >= 3 && strstr(err->params[2], "lock")) {
        xa_error_free(err);
        return xa_error_new("VDI_IN_USE", 2, loc, "snapshot");
    }
    /* Any other complaint will show in the operation itself. */
    xa_error_free(err);
    return NULL;
}

struct xa_error *
xa_imgdir_vdi_clone(const struct xa_sr_ctx *sr, const char *location,
                    const char *new_uuid, struct xa_sr_vdi *out)
{
    if (!xa_imgdir_valid_name(new_uuid)) {
        return xa_error_invalid_value("location", new_uuid);
    }
    struct xa_error *err = NULL;
    int lk = lock_tree(sr, &err);
    if (lk < 0) {
        return err;
    }
    struct image im, tmpim;
    err = find_leaf(sr, location, &im);
    if (!err) {
        err = check_unlocked(sr, &im, location);
    }
    if (err) {
        unlock_tree(lk);
        return err;
    }
    /* Leaves first, under temporary names and over a base that does not
     * exist yet (-u), so that the only step that changes what 'location'
     * reads is the renames at the end. */
    char *base = fresh_name(BASE_PFX, im.qcow2 ? ".qcow2" : ".img");
    char *t1 = fresh_name(TMP_PFX, ".qcow2");
    char *t2 = fresh_name(TMP_PFX, ".qcow2");
    char *sz = size_arg(im.size);
    char *leaf = xa_asprintf("%s.qcow2", location);
    char *newleaf = xa_asprintf("%s.qcow2", new_uuid);
    const char *fmt = im.qcow2 ? "qcow2" : "raw";
    const char *a1[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b",
                        base,       "-F",     fmt,  t1,   sz,      NULL};
    const char *a2[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b",
                        base,       "-F",     fmt,  t2,   sz,      NULL};
    if (read_image(sr->path, newleaf, &tmpim) == 0) {
        err = xa_error_new("SR_BACKEND_FAILURE", 3, "1", "",
                           "an image with this name exists");
    }
    if (!err) {
        err = qemu_img(sr, a1, NULL);
    }
    if (!err) {
        err = qemu_img(sr, a2, NULL);
    }
    if (!err) {
        sync_file(sr, t1);
        sync_file(sr, t2);
        if (rename_in(sr, im.name, base) != 0) {
            err = xa_imgdir_failure("cannot rename", im.name, errno);
        } else if (rename_in(sr, t1, leaf) != 0) {
            err = xa_imgdir_failure("cannot rename", t1, errno);
            rename_in(sr, base, im.name); /* back as it was */
        } else if (rename_in(sr, t2, newleaf) != 0) {
            /* 'location' is fine over the base; only the new VDI failed. */
            err = xa_imgdir_failure("cannot rename", t2, errno);
        }
    }
    if (err) {
        unlink_in(sr, t1);
        unlink_in(sr, t2);
    } else {
        sync_dir(sr);
        err = read_back(sr, newleaf, new_uuid, out);
    }
    unlock_tree(lk);
    free(base);
    free(t1);
    free(t2);
    free(sz);
    free(leaf);
    free(newleaf);
    return err;
}

struct xa_error *
xa_imgdir_vdi_resize(const struct xa_sr_ctx *sr, const char *location,
                     int64_t new_size, struct xa_sr_vdi *out)
{
    struct xa_error *err = NULL;
    int lk = lock_tree(sr, &err);
    if (lk < 0) {
        return err;
    }
    struct image im;
    err = find_leaf(sr, location, &im);
    if (!err && new_size < im.size) {
        err = xa_error_new("VDI_TOO_SMALL", 2, location, "");
    }
    char *sz = size_arg(new_size);
    if (!err && new_size != im.size) {
        const char *argv[] = {"qemu-img",  "resize", "-q", "-f",
                              fmt_im(&im), im.name,  sz,   NULL};
        err = qemu_img(sr, argv, NULL);
    }
    if (!err) {
        char name[sizeof im.name];
        snprintf(name, sizeof name, "%s", im.name);
        err = read_back(sr, name, location, out);
    }
    free(sz);
    unlock_tree(lk);
    return err;
}

struct xa_error *
xa_imgdir_vdi_copy(const struct xa_sr_ctx *src, const char *location,
                   const struct xa_sr_ctx *dst, const char *new_uuid,
                   struct xa_sr_vdi *out)
{
    if (!xa_imgdir_valid_name(new_uuid)) {
        return xa_error_invalid_value("location", new_uuid);
    }
    struct image im;
    struct xa_error *err = find_leaf(src, location, &im);
    if (err) {
        return err;
    }
    char *from = in_dir(src, im.name);
    char *tmp = fresh_name(TMP_PFX, ".qcow2");
    char *to = in_dir(dst, tmp);
    /* A full conversion reads through the chain; holes stay holes. */
    const char *argv[] = {"qemu-img", "convert", "-q", "-f", fmt_im(&im),
                          "-O",       "qcow2",   from, to,   NULL};
    err = xa_imgdir_run(dst->path, argv, NULL);
    char *name = xa_asprintf("%s.qcow2", new_uuid);
    if (!err) {
        sync_file(dst, tmp);
        int lk = lock_tree(dst, &err);
        struct image tmpim;
        if (lk >= 0) {
            if (read_image(dst->path, name, &tmpim) == 0) {
                err = xa_error_new("SR_BACKEND_FAILURE", 3, "1", "",
                                   "an image with this name exists");
            } else if (rename_in(dst, tmp, name) != 0) {
                err = xa_imgdir_failure("cannot rename", tmp, errno);
            }
            unlock_tree(lk);
        }
        if (!err) {
            sync_dir(dst);
            err = read_back(dst, name, new_uuid, out);
        }
    }
    if (err) {
        unlink(to);
    }
    free(from);
    free(tmp);
    free(to);
    free(name);
    return err;
}

struct xa_error *
xa_imgdir_vdi_stat(const struct xa_sr_ctx *sr, const char *location,
                   struct xa_sr_vdi *out)
{
    struct image im;
    struct xa_error *err = find_leaf(sr, location, &im);
    if (!err) {
        fill_vdi(location, &im, out);
    }
    return err;
}

struct xa_error *
xa_imgdir_vdi_attach(const struct xa_sr_ctx *sr, const char *location,
                     bool read_only, char **path, char **format)
{
    XA_UNUSED(read_only);
    struct image im;
    struct xa_error *err = find_leaf(sr, location, &im);
    if (!err) {
        *path = in_dir(sr, im.name);
        *format = xa_strdup(fmt_im(&im));
    }
    return err;
}

struct xa_error *
xa_imgdir_vdi_detach(const struct xa_sr_ctx *sr, const char *location)
{
    XA_UNUSED(sr);
    XA_UNUSED(location);
    return NULL;
}

struct xa_error *
xa_imgdir_vdi_stage(const struct xa_sr_ctx *sr, const char *location,
                    char **tmp)
{
    struct image im;
    struct xa_error *err = find_leaf(sr, location, &im);
    if (err) {
        return err;
    }
    char *name = fresh_name(TMP_PFX, ".part");
    char *p = in_dir(sr, name);
    free(name);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        err = xa_imgdir_failure("cannot create", p, errno);
        free(p);
        return err;
    }
    close(fd);
    *tmp = p;
    return NULL;
}

/* What qemu-img says about an uploaded image: its virtual size, after
 * checking that it is a 'fmt' image standing alone (no backing file, no
 * external data file: either would let an upload read files outside the
 * SR). */
static struct xa_error *
inspect_upload(const char *dir, const char *path, const char *fmt,
               int64_t *size)
{
    const char *argv[] = {"qemu-img",      "info", "-f", fmt,
                          "--output=json", path,   NULL};
    char *out = NULL;
    struct xa_error *err = xa_imgdir_run(dir, argv, &out);
    if (err) {
        char *msg = xa_asprintf("not a valid %s image: %s", fmt,
                                err->n_params >= 3 ? err->params[2] : "");
        xa_error_free(err);
        err = io_error(msg);
        free(msg);
        return err;
    }
    struct json_object *j = json_tokener_parse(out);
    free(out);
    struct json_object *v, *fs, *data;
    if (!j || !json_object_object_get_ex(j, "virtual-size", &v)) {
        err = io_error("cannot read the image's size");
    } else if (json_object_object_get_ex(j, "backing-filename", NULL)) {
        err = io_error("images with a backing file are refused");
    } else if (json_object_object_get_ex(j, "format-specific", &fs) &&
               json_object_object_get_ex(fs, "data", &data) &&
               json_object_object_get_ex(data, "data-file", NULL)) {
        err = io_error("images with an external data file are refused");
    } else {
        *size = json_object_get_int64(v);
    }
    json_object_put(j);
    if (!err && strcmp(fmt, "qcow2") == 0) {
        /* A truncated or damaged qcow2 fails its check (exit 2); leaked
         * clusters alone (exit 3) are harmless. */
        const char *chk[] = {"qemu-img", "check", "-q", "-f",
                             "qcow2",    path,    NULL};
        err = xa_imgdir_run(dir, chk, NULL);
        if (err && strcmp(err->params[0], "3") == 0) {
            xa_error_free(err);
            err = NULL;
        } else if (err) {
            char *msg = xa_asprintf("the qcow2 image is damaged: %s",
                                    err->n_params >= 3 ? err->params[2] : "");
            xa_error_free(err);
            err = io_error(msg);
            free(msg);
        }
    }
    return err;
}

struct xa_error *
xa_imgdir_vdi_publish(const struct xa_sr_ctx *sr, const char *location,
                      const char *tmp, const char *format, int64_t max_size,
                      struct xa_sr_vdi *out)
{
    struct xa_error *err = NULL;
    char *work = xa_strdup(tmp); /* the file to publish, maybe converted */
    char *extra = NULL;          /* a conversion to remove as well */
    const char *fmt = strcmp(format, "vhd") == 0 ? "vpc" : format;
    bool raw = strcmp(fmt, "raw") == 0;
    int64_t size = 0;
    if (raw) {
        struct stat st;
        if (lstat(tmp, &st) != 0 || !S_ISREG(st.st_mode)) {
            err = xa_imgdir_failure("cannot use", tmp, errno ? errno : EINVAL);
        } else if (st.st_size > max_size) {
            char *msg = xa_asprintf("%" PRId64 " bytes do not fit in the VDI's "
                                    "%" PRId64,
                                    (int64_t)st.st_size, max_size);
            err = io_error(msg);
            free(msg);
        } else if (truncate(tmp, max_size) != 0) {
            err = xa_imgdir_failure("cannot extend", tmp, errno);
        }
        size = max_size;
    } else if (strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "vpc") != 0) {
        err = xa_error_new("VALUE_NOT_SUPPORTED", 3, "format", format,
                           "supported: raw, vhd, qcow2");
    } else {
        err = inspect_upload(sr->path, tmp, fmt, &size);
        if (!err && size > max_size) {
            char *msg = xa_asprintf("a %" PRId64 "-byte image does not fit in "
                                    "the VDI's %" PRId64,
                                    size, max_size);
            err = io_error(msg);
            free(msg);
        }
        if (!err && strcmp(fmt, "vpc") == 0) {
            char *name = fresh_name(TMP_PFX, ".qcow2");
            extra = in_dir(sr, name);
            free(name);
            const char *argv[] = {"qemu-img", "convert", "-q", "-f",  "vpc",
                                  "-O",       "qcow2",   work, extra, NULL};
            err = xa_imgdir_run(sr->path, argv, NULL);
            if (err) {
                char *msg =
                    xa_asprintf("cannot read the VHD image: %s",
                                err->n_params >= 3 ? err->params[2] : "");
                xa_error_free(err);
                err = io_error(msg);
                free(msg);
            } else {
                unlink(work);
                free(work);
                work = xa_strdup(extra);
            }
        }
        if (!err && size < max_size) {
            char *sz = size_arg(max_size);
            const char *argv[] = {"qemu-img", "resize", "-q", "-f",
                                  "qcow2",    work,     sz,   NULL};
            err = xa_imgdir_run(sr->path, argv, NULL);
            free(sz);
        }
    }
    if (!err) {
        int fd = open(work, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
    }
    int lk = err ? -1 : lock_tree(sr, &err);
    struct image old;
    if (!err) {
        err = find_leaf(sr, location, &old);
    }
    if (!err) {
        /* The new image takes the name that find_leaf prefers, so the VDI
         * switches content in one rename; then the old image goes. */
        char *name = xa_asprintf("%s%s", location, raw ? ".img" : ".qcow2");
        char *dest = in_dir(sr, name);
        if (!raw && strcmp(old.name, name) != 0) {
            /* qcow2 replacing a raw .img: the .img is preferred, so it
             * must go first; rename it aside to keep it until the end. */
            char *aside = fresh_name(TMP_PFX, ".img");
            if (rename_in(sr, old.name, aside) != 0 ||
                rename(work, dest) != 0) {
                err = xa_imgdir_failure("cannot replace", old.name, errno);
                rename_in(sr, aside, old.name);
            } else {
                unlink_in(sr, aside);
            }
            free(aside);
        } else if (rename(work, dest) != 0) {
            err = xa_imgdir_failure("cannot replace", old.name, errno);
        } else if (strcmp(old.name, name) != 0) {
            unlink_in(sr, old.name);
        }
        if (!err) {
            sync_dir(sr);
            if (old.backing[0]) {
                collect_bases(sr, old.backing);
            }
            err = read_back(sr, name, location, out);
        }
        free(name);
        free(dest);
    }
    unlock_tree(lk);
    unlink(tmp);
    unlink(work);
    if (extra) {
        unlink(extra);
    }
    free(work);
    free(extra);
    return err;
}

struct xa_error *
xa_imgdir_vdi_export(const struct xa_sr_ctx *sr, const char *location,
                     const char *format, char **path, bool *temporary)
{
    struct image im;
    struct xa_error *err = find_leaf(sr, location, &im);
    if (err) {
        return err;
    }
    bool want_raw = strcmp(format, "raw") == 0;
    bool want_qcow2 = strcmp(format, "qcow2") == 0;
    if (!want_raw && !want_qcow2 && strcmp(format, "vhd") != 0) {
        return xa_error_new("VALUE_NOT_SUPPORTED", 3, "format", format,
                            "supported: raw, vhd, qcow2");
    }
    if ((want_raw && !im.qcow2) || (want_qcow2 && im.qcow2 && !im.backing[0])) {
        *path = in_dir(sr, im.name);
        *temporary = false;
        return NULL;
    }
    char *name = fresh_name(TMP_PFX, ".export");
    char *out = in_dir(sr, name);
    free(name);
    const char *argv[] = {"qemu-img",
                          "convert",
                          "-q",
                          "-f",
                          fmt_im(&im),
                          "-O",
                          want_raw     ? "raw"
                          : want_qcow2 ? "qcow2"
                                       : "vpc",
                          im.name,
                          out,
                          NULL,
                          NULL,
                          NULL};
    if (!want_raw && !want_qcow2) {
        /* Keep the exact size rather than a CHS-rounded one. */
        argv[7] = "-o";
        argv[8] = "subformat=dynamic,force_size=on";
        argv[9] = im.name;
        argv[10] = out;
    }
    err = qemu_img(sr, argv, NULL);
    if (err) {
        unlink(out);
        free(out);
        return err;
    }
    *path = out;
    *temporary = true;
    return NULL;
}
