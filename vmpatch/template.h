/* vmpatch apply --template (template.c). */
#ifndef VMPATCH_TEMPLATE_H
#define VMPATCH_TEMPLATE_H

#include "vmkit-virt.h"
#include "apply.h"

/* Patches template name of pool (NULL: the default template pool) on conn (a
 * local connection) into a new template as: a copy of its volumes, made the way
 * vmrun template create makes a template (its lock, the record first as
 * incomplete, removed on failure), patched from j->src by vmp_patch_disks, sealed
 * again and marked complete (j->result "patched"). When nothing is updated, what
 * the run made is removed and j->result is "up-to-date": no new template. 0, or
 * an exit code after one message (3: no template name; 4: name is incomplete, or
 * as exists). j->vm names the run in messages. */
int vmp_apply_template(virConnectPtr conn, const char *pool, const char *name, const char *as,
                       struct vmp_patch_job *j);

#endif
