/* vmrun's own modules; shared code lives in common/. */
#ifndef VMRUN_H
#define VMRUN_H

#include "vmkit.h"

int cmd_create(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_reboot(int argc, char **argv);
int cmd_pause(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_destroy(int argc, char **argv);
int cmd_undefine(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_wait(int argc, char **argv);
int cmd_template(int argc, char **argv);

/* Templates (template.c); reading one is common/virt's (struct vm_template,
 * vm_template_load ...). The template's disk as this machine reads it, for a
 * clone's customization; NULL after a message. Caller frees. */
char *template_local_disk(virConnectPtr conn, const struct vm_template *t);

/* First-boot customization through libguestfs (customize.c); sealing a template's
 * disk is vm_gfs_seal_disk. */
struct customization {
  const char *hostname;
  const char *ssh_key_file;
  const char *root_password_file;
};
bool customization_wanted(const struct customization *c);
int customization_check(const struct customization *c);
int customize_disk(const char *path, const char *format, const struct customization *c);


#endif
