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

/* A template (template.c): volumes of a template pool, NAME.qcow2 (read-only),
 * NAME.template (its record, JSON), NAME.vmlinuz and NAME.initrd. Paths are the
 * host's. */
struct template {
  char *name, *pool, *id, *state;
  char *disk, *kernel, *initrd, *cmdline;
  unsigned vcpus;
  uint64_t memory, virtual_size;
  json_object *json;
};
/* Loads a template from pool (NULL: the default template pool). 0; 3 when there is
 * none; 4 when it is incomplete, unless allow_incomplete. */
int template_load(virConnectPtr conn, const char *pool, const char *name, bool allow_incomplete,
                  struct template *t);
void template_free(struct template *t);
/* Finds (create: defines when missing and a default) and starts the template pool. */
int template_open_pool(virConnectPtr conn, const char *pool_name, bool create, virStoragePoolPtr *pool);
/* A path to a copy of the template's disk that this machine can read (the template
 * itself on a local connection); NULL after a message. Caller frees. */
char *template_local_disk(virConnectPtr conn, const struct template *t);

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


#endif
