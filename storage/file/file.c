/* file.c - SR type "file": the image directory of storage/imgdir on any
 * directory the PBD names (device_config:location), shared when the SR
 * says so, so that several hosts can use one directory (a cluster
 * filesystem, or a share mounted by other means) as shared storage. */
#include "storage/imgdir/imgdir.h"

const struct xa_sr_driver xa_sr_file_driver = {
    .type = "file",
    .content_type = "user",
    .shareable = true,
    .attach = xa_imgdir_attach,
    .detach = xa_imgdir_detach,
    .probe = xa_imgdir_probe,
    XA_IMGDIR_ENTRIES,
};
