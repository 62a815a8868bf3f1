/* ext.c - SR type "ext", xapi's local default: the image directory of
 * storage/imgdir (thin qcow2 images, snapshots as backing chains) in
 * <state-dir>/sr/<uuid>, or the directory device_config:path or
 * :location names.  xapi's ext SR formats the block device
 * device_config:device; xapid keeps to directories and leaves disks to
 * the administrator's own mount. */
#include "storage/imgdir/imgdir.h"

const struct xa_sr_driver xa_sr_ext_driver = {
    .type = "ext",
    .content_type = "user",
    .shareable = false,
    .attach = xa_imgdir_attach,
    .detach = xa_imgdir_detach,
    .probe = xa_imgdir_probe,
    XA_IMGDIR_ENTRIES,
};
