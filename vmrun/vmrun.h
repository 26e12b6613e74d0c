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

/* A template: TEMPLATEDIR/NAME/ holding disk.qcow2 (read-only), template.json
 * and, for direct kernel boot, the kernel and initrd it was made with. */
struct template {
  char *name, *dir, *disk, *kernel, *initrd, *cmdline;
  unsigned vcpus;
  uint64_t memory, virtual_size;
};
int template_load(const char *name, struct template *t);
void template_free(struct template *t);

/* First-boot customization and sealing, both through libguestfs (customize.c). */
struct customization {
  const char *hostname;
  const char *ssh_key_file;
  const char *root_password_file;
};
bool customization_wanted(const struct customization *c);
int customization_check(const struct customization *c);
int customize_disk(const char *path, const char *format, const struct customization *c);
int seal_disk(const char *path);

/* The file a domain's serial console is logged to, from its definition. */
char *console_log_path(xmlDocPtr doc);

#endif
