/* templates.c - the default VM templates every xapi host carries.
 *
 * xe vm-install, XenCenter's New VM wizard, Xen Orchestra and the
 * Ansible/CloudStack drivers all start a VM by cloning one of these by
 * name, so names, boot settings, memory and the provisioning XML follow
 * what XenServer's guest-templates-json ships (its per-OS files and the
 * base files they derive from).  One static table describes them; the
 * code below turns each entry into a VM row and its VM_metrics row. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "bootstrap.h"
#include "db/db.h"
#include "util.h"

#define MIB ((int64_t)1 << 20)
#define GIB ((int64_t)1 << 30)

/* The shapes the per-OS templates derive from. */
enum tmpl_family {
    FAM_OTHER_MEDIA,   /* anything from an ISO, BIOS boot */
    FAM_LINUX_BIOS,    /* HVM Linux on BIOS firmware */
    FAM_LINUX_UEFI,    /* HVM Linux on UEFI, secure boot when available */
    FAM_WINDOWS,       /* Windows Server on UEFI */
    FAM_WINDOWS_DESKT, /* desktop Windows on UEFI: also a laptop slate */
};

struct tmpl_family_desc {
    const char *description; /* NULL: generated from the name (Windows) */
    const char *install_methods;
    bool linux_template;
    /* Keys beyond the common nx/acpi/apic/pae/hpet set. */
    const struct xa_bootstrap_kv *platform;
    const struct xa_bootstrap_kv *boot_params;
    int vcpus;     /* VCPUs_max and VCPUs_at_startup */
    int vcpus_min; /* recommendation; 0 leaves it out */
    bool vendor_device;
    bool gpu; /* allow GPU pass-through and vGPU */
    const char *supports_bios, *supports_uefi, *supports_secure_boot;
};

static const struct xa_bootstrap_kv platform_other[] = {
    {"viridian", "true"},
    {"device-model", "qemu-upstream-compat"},
    {"secureboot", "false"},
    {NULL, NULL},
};
static const struct xa_bootstrap_kv platform_linux_bios[] = {
    {"vga", "std"},
    {"videoram", "8"},
    {"viridian", "false"},
    {"device_id", "0001"},
    {"device-model", "qemu-upstream-compat"},
    {"secureboot", "false"},
    {NULL, NULL},
};
/* UEFI guests get no device-model key: the toolstack then picks the one
 * that carries OVMF. */
static const struct xa_bootstrap_kv platform_linux_uefi[] = {
    {"vga", "std"},        {"videoram", "8"},      {"viridian", "false"},
    {"device_id", "0001"}, {"secureboot", "auto"}, {NULL, NULL},
};
static const struct xa_bootstrap_kv platform_windows[] = {
    {"cores-per-socket", "2"},
    {"device_id", "0002"},
    {"viridian", "true"},
    {"viridian_time_ref_count", "true"},
    {"viridian_reference_tsc", "true"},
    {"viridian_hcall_remote_tlb_flush", "true"},
    {"viridian_apic_assist", "true"},
    {"viridian_crash_ctl", "true"},
    {"viridian_stimer", "true"},
    {"secureboot", "true"},
    {NULL, NULL},
};
static const struct xa_bootstrap_kv platform_windows_desktop[] = {
    {"cores-per-socket", "2"},
    {"device_id", "0002"},
    {"viridian", "true"},
    {"viridian_time_ref_count", "true"},
    {"viridian_reference_tsc", "true"},
    {"viridian_hcall_remote_tlb_flush", "true"},
    {"viridian_apic_assist", "true"},
    {"viridian_crash_ctl", "true"},
    {"viridian_stimer", "true"},
    {"secureboot", "true"},
    {"acpi_laptop_slate", "1"},
    {NULL, NULL},
};

/* "d" before "c": a blank disk falls through to the CD, while a disk
 * that was installed boots without ejecting the ISO. */
static const struct xa_bootstrap_kv boot_other[] = {
    {"order", "dc"},
    {NULL, NULL},
};
static const struct xa_bootstrap_kv boot_linux_bios[] = {
    {"order", "cdn"},
    {NULL, NULL},
};
static const struct xa_bootstrap_kv boot_linux_uefi[] = {
    {"firmware", "uefi"},
    {"order", "cdn"},
    {NULL, NULL},
};
static const struct xa_bootstrap_kv boot_windows[] = {
    {"firmware", "uefi"},
    {"order", "cd"},
    {NULL, NULL},
};

static const char linux_description[] =
    "Boot the installer from a CD, or from the CLI run vm-install and point "
    "other-config:install-repository at a network repository "
    "(http://<server>/<path> or nfs:server:/<path>).";

static const struct tmpl_family_desc families[] = {
    [FAM_OTHER_MEDIA] =
        {
            .description = "A blank HVM guest for installing an operating "
                           "system from any install media.",
            .install_methods = "cdrom",
            .platform = platform_other,
            .boot_params = boot_other,
            .vcpus = 1,
        },
    [FAM_LINUX_BIOS] =
        {
            .description = linux_description,
            .install_methods = "cdrom,nfs,http,ftp",
            .linux_template = true,
            .platform = platform_linux_bios,
            .boot_params = boot_linux_bios,
            .vcpus = 1,
            .gpu = true,
        },
    [FAM_LINUX_UEFI] =
        {
            .description = linux_description,
            .install_methods = "cdrom,nfs,http,ftp",
            .linux_template = true,
            .platform = platform_linux_uefi,
            .boot_params = boot_linux_uefi,
            .vcpus = 1,
            .gpu = true,
            .supports_uefi = "yes",
            .supports_secure_boot = "yes",
        },
    [FAM_WINDOWS] =
        {
            .install_methods = "cdrom",
            .platform = platform_windows,
            .boot_params = boot_windows,
            .vcpus = 2,
            .vcpus_min = 2,
            .vendor_device = true,
            .supports_bios = "yes",
            .supports_uefi = "yes",
            .supports_secure_boot = "yes",
        },
    [FAM_WINDOWS_DESKT] =
        {
            .install_methods = "cdrom",
            .platform = platform_windows_desktop,
            .boot_params = boot_windows,
            .vcpus = 2,
            .vcpus_min = 2,
            .vendor_device = true,
            .supports_bios = "yes",
            .supports_uefi = "yes",
            .supports_secure_boot = "yes",
        },
};

struct tmpl_desc {
    /* guest-templates-json's fixed uuid, so a template is the same object
     * on xapid and on xapi; NULL where none is known (a fresh one). */
    const char *uuid;
    const char *reference_label;
    const char *name_label;
    enum tmpl_family family;
    int64_t min_memory; /* static_min; the other three are twice this */
    int64_t max_memory; /* recommended ceiling for static_max */
    int64_t disk_size;  /* bytes of the system disk; 0 for none */
    bool disk_bootable; /* Windows installs boot from the CD, not the disk */
    bool sriov;
    int user_version;
};

/* Values from guest-templates-json's json/<reference_label>.json and the
 * base files each derives from. */
static const struct tmpl_desc templates[] = {
    {"552bce37-51b2-445d-84f2-5f33fa112d7e", "other-install-media",
     "Other install media", FAM_OTHER_MEDIA, 128 * MIB, 128 * GIB, 0, false,
     false, 2},
    {"07d91aaa-43f7-430a-bf84-0edb6714df0f", "debian-12", "Debian Bookworm 12",
     FAM_LINUX_UEFI, 1 * GIB, 1536 * GIB, 10 * GIB, true, false, 1},
    {"acfeecf4-4007-412b-8f13-6d61a6aee5bd", "debian-11", "Debian Bullseye 11",
     FAM_LINUX_BIOS, 512 * MIB, 1536 * GIB, 10 * GIB, true, false, 1},
    /* XCP-ng 8.3 ships this one; shaped like Debian 12, no known uuid. */
    {NULL, "debian-13", "Debian Trixie 13", FAM_LINUX_UEFI, 1 * GIB, 1536 * GIB,
     10 * GIB, true, false, 1},
    {"df1a0e64-3799-482b-aa9f-1ed713c7dac5", "ubuntu-22.04",
     "Ubuntu Jammy Jellyfish 22.04", FAM_LINUX_UEFI, 1 * GIB, 1536 * GIB,
     10 * GIB, true, false, 1},
    {"2cf37285-57bc-4633-a24f-0c6c825dda66", "ubuntu-20.04",
     "Ubuntu Focal Fossa 20.04", FAM_LINUX_UEFI, 512 * MIB, 1536 * GIB,
     10 * GIB, true, false, 1},
    {"a3d70e4d-c5ac-4dfb-999b-30a0a7efe546", "centos-9", "CentOS Stream 9",
     FAM_LINUX_BIOS, 2 * GIB, 1536 * GIB, 10 * GIB, true, false, 1},
    {"1a647cf9-99c1-4e9c-b3b4-6b9989c530be", "rocky-9", "Rocky Linux 9",
     FAM_LINUX_UEFI, 2 * GIB, 1536 * GIB, 15 * GIB, true, false, 1},
    {"6ff2c2f1-92af-4396-b117-a9cc2cc76aa4", "alma-9", "AlmaLinux 9",
     FAM_LINUX_UEFI, 2 * GIB, 1536 * GIB, 10 * GIB, true, false, 1},
    {"1c33af1c-e919-418c-ad45-85d7d6fb604a", "windows-server-2022-64bit",
     "Windows Server 2022 (64-bit)", FAM_WINDOWS, 1 * GIB, 1536 * GIB, 32 * GIB,
     false, true, 1},
    {"7774689b-4ca1-4dea-8545-dddd6b64c17f", "windows-10-64bit",
     "Windows 10 (64-bit)", FAM_WINDOWS_DESKT, 2 * GIB, 1536 * GIB, 24 * GIB,
     false, false, 1},
};

/* Limits every family shares (device slots a guest can have, vCPUs). */
#define TMPL_VCPUS_MAX 32
#define TMPL_VBDS_MAX  255
#define TMPL_VIFS_MAX  7

size_t
xa_bootstrap_n_templates(void)
{
    return XA_ARRAY_SIZE(templates);
}

const char *
xa_bootstrap_template_name(size_t i)
{
    return i < XA_ARRAY_SIZE(templates) ? templates[i].name_label : NULL;
}

static struct xa_value *
platform_map(const struct tmpl_family_desc *fam)
{
    /* Defaults guest-templates-json gives every template. */
    static const struct xa_bootstrap_kv common[] = {
        {"nx", "true"},  {"acpi", "1"},    {"apic", "true"},
        {"pae", "true"}, {"hpet", "true"}, {NULL, NULL},
    };
    struct xa_value *m = xa_bootstrap_map(common);

    for (const struct xa_bootstrap_kv *kv = fam->platform; kv->key != NULL;
         kv++) {
        xa_struct_set(m, kv->key, xa_string(kv->val));
    }
    return m;
}

/* The <restrictions> document clients read to bound what they offer. */
static char *
recommendations_xml(const struct tmpl_desc *d,
                    const struct tmpl_family_desc *fam)
{
    struct xa_buf b = {0};

    xa_buf_puts(&b, "<restrictions>");
    xa_buf_printf(&b,
                  "<restriction field=\"memory-static-max\" "
                  "max=\"%" PRId64 "\"/>",
                  d->max_memory);
    if (fam->vcpus_min > 0) {
        xa_buf_printf(&b, "<restriction field=\"vcpus-min\" min=\"%d\"/>",
                      fam->vcpus_min);
    }
    xa_buf_printf(&b, "<restriction field=\"vcpus-max\" max=\"%d\"/>",
                  TMPL_VCPUS_MAX);
    xa_buf_printf(&b, "<restriction field=\"has-vendor-device\" value=\"%s\"/>",
                  fam->vendor_device ? "true" : "false");
    if (fam->gpu) {
        xa_buf_puts(&b, "<restriction field=\"allow-gpu-passthrough\" "
                        "value=\"1\"/>"
                        "<restriction field=\"allow-vgpu\" value=\"1\"/>");
    }
    if (d->sriov) {
        xa_buf_puts(&b, "<restriction field=\"allow-network-sriov\" "
                        "value=\"1\"/>");
    }
    if (fam->supports_bios != NULL) {
        xa_buf_printf(&b, "<restriction field=\"supports-bios\" value=\"%s\"/>",
                      fam->supports_bios);
    }
    if (fam->supports_uefi != NULL) {
        xa_buf_printf(&b, "<restriction field=\"supports-uefi\" value=\"%s\"/>",
                      fam->supports_uefi);
    }
    if (fam->supports_secure_boot != NULL) {
        xa_buf_printf(&b,
                      "<restriction field=\"supports-secure-boot\" "
                      "value=\"%s\"/>",
                      fam->supports_secure_boot);
    }
    xa_buf_printf(&b,
                  "<restriction property=\"number-of-vbds\" max=\"%d\"/>"
                  "<restriction property=\"number-of-vifs\" max=\"%d\"/>",
                  TMPL_VBDS_MAX, TMPL_VIFS_MAX);
    xa_buf_puts(&b, "</restrictions>");
    return xa_buf_steal(&b);
}

static struct xa_value *
template_other_config(const struct tmpl_desc *d,
                      const struct tmpl_family_desc *fam)
{
    struct xa_value *oc = xa_struct();
    char seed[37];

    /* VIFs of clones derive stable MACs from this. */
    xa_uuid_generate(seed);
    xa_struct_add(oc, "mac_seed", xa_string(seed));
    if (d->disk_size > 0) {
        /* What vm-install provisions: an empty sr means the pool's
         * default SR. */
        xa_struct_add(oc, "disks",
                      xa_string_take(xa_asprintf(
                          "<provision><disk device=\"0\" size=\"%" PRId64
                          "\" sr=\"\" bootable=\"%s\" type=\"system\"/>"
                          "</provision>",
                          d->disk_size, d->disk_bootable ? "true" : "false")));
    }
    xa_struct_add(oc, "install-methods", xa_string(fam->install_methods));
    if (fam->linux_template) {
        xa_struct_add(oc, "linux_template", xa_string("true"));
    }
    /* xapi derives is_default_template from this key; keeping both lets
     * a template that goes through export/import stay recognisable. */
    xa_struct_add(oc, "default_template", xa_string("true"));
    return oc;
}

static struct xa_error *
create_template(struct xa_txn *t, const struct tmpl_desc *d)
{
    const struct tmpl_family_desc *fam = &families[d->family];
    char *ref = xa_ref_new();
    char *metrics_ref = xa_ref_new();
    char *description =
        fam->description != NULL
            ? xa_strdup(fam->description)
            : xa_asprintf("Clones provision their storage on first boot, "
                          "then tune themselves for %s.",
                          d->name_label);
    char now[32];
    struct xa_error *err;

    xa_datetime_now(now);
    struct xa_bootstrap_field metrics[] = {
        {"memory_actual", xa_int(0)},
        {"VCPUs_number", xa_int(0)},
        {"state", xa_array()},
        {"start_time", xa_datetime("19700101T00:00:00Z")},
        {"install_time", xa_datetime(now)},
        {"last_updated", xa_datetime("19700101T00:00:00Z")},
    };
    err = xa_bootstrap_create_row(t, "VM_metrics", metrics_ref, metrics,
                                  XA_ARRAY_SIZE(metrics));
    if (err != NULL) {
        goto out;
    }

    struct xa_bootstrap_field vm[] = {
        {"uuid", xa_string(d->uuid != NULL ? d->uuid : "")},
        {"name_label", xa_string(d->name_label)},
        {"name_description", xa_string(description)},
        {"power_state", xa_string("Halted")},
        {"user_version", xa_int(d->user_version)},
        {"is_a_template", xa_bool(true)},
        {"is_default_template", xa_bool(true)},
        {"resident_on", xa_string("OpaqueRef:NULL")},
        {"affinity", xa_string("OpaqueRef:NULL")},
        /* guest-templates-json's rule: static_min is the OS minimum,
         * everything else twice that, so smin <= dmin <= dmax <= smax. */
        {"memory_static_min", xa_int(d->min_memory)},
        {"memory_dynamic_min", xa_int(2 * d->min_memory)},
        {"memory_dynamic_max", xa_int(2 * d->min_memory)},
        {"memory_static_max", xa_int(2 * d->min_memory)},
        {"VCPUs_params", xa_struct()},
        {"VCPUs_max", xa_int(fam->vcpus)},
        {"VCPUs_at_startup", xa_int(fam->vcpus)},
        {"actions_after_shutdown", xa_string("destroy")},
        {"actions_after_reboot", xa_string("restart")},
        {"actions_after_crash", xa_string("restart")},
        {"PV_bootloader", xa_string("")},
        {"PV_kernel", xa_string("")},
        {"PV_ramdisk", xa_string("")},
        {"PV_args", xa_string("")},
        {"PV_bootloader_args", xa_string("")},
        {"PV_legacy_args", xa_string("")},
        {"HVM_boot_policy", xa_string("BIOS order")},
        {"HVM_boot_params", xa_bootstrap_map(fam->boot_params)},
        {"platform", platform_map(fam)},
        {"PCI_bus", xa_string("")},
        {"other_config", template_other_config(d, fam)},
        {"domid", xa_int(-1)},
        {"domarch", xa_string("")},
        {"is_control_domain", xa_bool(false)},
        {"metrics", xa_string(metrics_ref)},
        {"guest_metrics", xa_string("OpaqueRef:NULL")},
        {"recommendations", xa_string_take(recommendations_xml(d, fam))},
        {"reference_label", xa_string(d->reference_label)},
        {"has_vendor_device", xa_bool(fam->vendor_device)},
        {"domain_type", xa_string("hvm")},
    };
    err = xa_bootstrap_create_row(t, "VM", ref, vm, XA_ARRAY_SIZE(vm));
out:
    free(description);
    free(metrics_ref);
    free(ref);
    return err;
}

struct xa_error *
xa_bootstrap_create_templates(struct xa_txn *t)
{
    for (size_t i = 0; i < XA_ARRAY_SIZE(templates); i++) {
        struct xa_error *err = create_template(t, &templates[i]);

        if (err != NULL) {
            return err;
        }
    }
    return NULL;
}
