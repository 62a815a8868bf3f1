/* xen.h - the Xen backend: domains built by libxl in the control domain.
 *
 * Built only where libxenlight is installed (CMake defines XA_HAVE_XEN);
 * selected with --hypervisor xen in dom0 of a Xen host, with xenstored
 * and xenconsoled running.  See xen.c for how each entry maps to libxl. */
#ifndef XA_HV_XEN_H
#define XA_HV_XEN_H

#include "hypervisor/hv-driver.h"

extern const struct xa_hv_driver xa_hv_xen_driver;

#endif
