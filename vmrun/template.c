/* vmrun template create|list|delete. A template is a folder in the template
 * directory: disk.qcow2 (sealed, read-only), template.json (what a clone
 * inherits), and the kernel and initrd of a direct-boot guest. Templates are plain
 * files so that they can be copied between hosts with any tool. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrun.h"

static const struct vm_column template_cols[] = {
  { "name", "NAME", VM_COL_STR },
  { "size", "SIZE", VM_COL_BYTES },
  { "allocated", "ALLOCATED", VM_COL_BYTES },
  { "vcpus", "VCPUS", VM_COL_INT },
  { "memory", "MEMORY", VM_COL_BYTES },
  { "clones", "CLONES", VM_COL_INT },
  { "created", "CREATED", VM_COL_STR },
  { "source", "SOURCE", VM_COL_STR },
  { NULL, NULL, 0 },
};

void template_free(struct template *t)
{
  free(t->name);
  free(t->dir);
  free(t->disk);
  free(t->kernel);
  free(t->initrd);
  free(t->cmdline);
  memset(t, 0, sizeof *t);
}

static char *member(const char *dir, json_object *j, const char *key)
{
  json_object *v;
  if (!json_object_object_get_ex(j, key, &v) || !json_object_is_type(v, json_type_string))
    return NULL;
  const char *s = json_object_get_string(v);
  /* Members are file names inside the template's folder, never paths elsewhere. */
  if (!*s || strchr(s, '/') || strcmp(s, "..") == 0) return NULL;
  return vm_strdup_printf("%s/%s", dir, s);
}

static json_object *load_json(const char *dir)
{
  CLEANUP_FREE char *path = vm_strdup_printf("%s/template.json", dir);
  CLEANUP_FREE char *text = vm_read_file(path, 1 << 20, NULL);
  return text ? json_tokener_parse(text) : NULL;
}

int template_load(const char *name, struct template *t)
{
  memset(t, 0, sizeof *t);
  int rc = vm_check_name("template", name);
  if (rc) return rc;
  t->dir = vm_strdup_printf("%s/%s", vm_template_dir(), name);
  CLEANUP_JSON json_object *j = NULL;
  struct stat st;
  if (stat(t->dir, &st) < 0) {
    template_free(t);
    return vm_fail(VM_EXIT_NOTFOUND, "no such template '%s' in '%s'", name, vm_template_dir());
  }
  j = load_json(t->dir);
  json_object *v;
  if (!j || !(t->disk = member(t->dir, j, "disk")) || access(t->disk, R_OK) < 0) {
    template_free(t);
    return vm_fail(VM_EXIT_FAIL, "template '%s' is damaged: no valid template.json and disk", name);
  }
  t->name = strdup(name);
  t->kernel = member(t->dir, j, "kernel");
  t->initrd = member(t->dir, j, "initrd");
  if (json_object_object_get_ex(j, "cmdline", &v) && json_object_is_type(v, json_type_string))
    t->cmdline = strdup(json_object_get_string(v));
  if (json_object_object_get_ex(j, "vcpus", &v)) t->vcpus = (unsigned)json_object_get_int(v);
  if (json_object_object_get_ex(j, "memory", &v)) t->memory = (uint64_t)json_object_get_int64(v);
  if (json_object_object_get_ex(j, "virtual_size", &v))
    t->virtual_size = (uint64_t)json_object_get_int64(v);
  return 0;
}

static int copy_into(const char *dir, const char *src, const char *as)
{
  CLEANUP_FREE char *dst = vm_strdup_printf("%s/%s", dir, as);
  if (vm_copy_file(src, dst, 0444) < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot copy '%s'", src);
  return 0;
}

static char *o_from, *o_description;
static struct poptOption create_options[] = {
  { "from", '\0', POPT_ARG_STRING, &o_from, 0, "the shut-off VM whose boot disk becomes the template", "VM" },
  { "description", '\0', POPT_ARG_STRING, &o_description, 0, "a line about the template", "TEXT" },
  VM_POPT_COMMON,
  POPT_TABLEEND
};

static int template_create(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, create_options, "NAME",
                    "Seal a shut-off VM's boot disk into a read-only template.", 1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *name = args[0];
  if ((rc = vm_check_name("template", name))) return rc;
  if (!o_from) return vm_usage_error("--from VM is required");

  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(o_from, &conn, &dom))) return rc;
  if (vm_domain_state(dom) != VIR_DOMAIN_SHUTOFF)
    return vm_fail(VM_EXIT_STATE, "VM '%s' is %s: stop it before making a template of it", o_from,
                   vm_state_name(vm_domain_state(dom)));
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return VM_EXIT_FAIL;
  struct vm_disk *disks;
  size_t nd;
  vm_domain_disks(doc, &disks, &nd);
  const struct vm_disk *boot = NULL;
  for (size_t i = 0; i < nd && !boot; i++)
    if (disks[i].device && strcmp(disks[i].device, "disk") == 0 && disks[i].source) boot = &disks[i];
  CLEANUP_XPATHCTX xmlXPathContextPtr xp = vm_xpath_ctx(doc);
  CLEANUP_FREE char *kernel = vm_xpath_str(xp, "/domain/os/kernel");
  CLEANUP_FREE char *initrd = vm_xpath_str(xp, "/domain/os/initrd");
  CLEANUP_FREE char *cmdline = vm_xpath_str(xp, "/domain/os/cmdline");
  long long vcpus = vm_xpath_ll(xp, "/domain/vcpu", 1);
  long long mem_kib = vm_xpath_ll(xp, "/domain/memory", 0);

  const char *tdir = vm_template_dir();
  CLEANUP_FREE char *final = vm_strdup_printf("%s/%s", tdir, name);
  CLEANUP_FREE char *tmp = vm_strdup_printf("%s/.%s.tmp-%d", tdir, name, (int)getpid());
  CLEANUP_FREE char *disk = vm_strdup_printf("%s/disk.qcow2", tmp);
  CLEANUP_JSON json_object *info = NULL;
  if (!boot) {
    rc = vm_fail(VM_EXIT_STATE, "VM '%s' has no file-backed boot disk", o_from);
    goto out;
  }
  if (access(final, F_OK) == 0) {
    rc = vm_fail(VM_EXIT_STATE, "template '%s' already exists", name);
    goto out;
  }
  if (mkdir(tdir, 0755) < 0 && errno != EEXIST) {
    rc = vm_fail_errno(VM_EXIT_FAIL, "cannot create template directory '%s'", tdir);
    goto out;
  }
  if (mkdir(tmp, 0755) < 0) {
    rc = vm_fail_errno(VM_EXIT_FAIL, "cannot create '%s'", tmp);
    goto out;
  }
  vm_undo_dir(tmp);
  vm_catch_signals();

  /* The copy flattens any backing chain: a template stands on its own. */
  vm_progress("copying the disk", 0, 0);
  char *conv[] = { "qemu-img", "convert", "-q", "-f", boot->format ? boot->format : "raw",
                   "-O", "qcow2", boot->source, disk, NULL };
  rc = vm_run_checked(conv, NULL);
  vm_progress_end();
  if (rc == 0 && kernel) rc = copy_into(tmp, kernel, "vmlinuz");
  if (rc == 0 && initrd) rc = copy_into(tmp, initrd, "initrd.img");
  if (rc == 0 && !vm_interrupted()) rc = seal_disk(disk);
  if (rc == 0 && !(info = vm_image_info(disk, false))) rc = VM_EXIT_FAIL;
  if (rc == 0 && vm_interrupted()) rc = vm_fail(VM_EXIT_FAIL, "interrupted");
  if (rc == 0) {
    json_object *vsize = NULL;
    json_object_object_get_ex(info, "virtual-size", &vsize);
    char now[32];
    vm_iso_time(now);
    CLEANUP_JSON json_object *j = json_object_new_object();
    json_object_object_add(j, "format", json_object_new_int(1));
    json_object_object_add(j, "name", json_object_new_string(name));
    json_object_object_add(j, "created", json_object_new_string(now));
    json_object_object_add(j, "source", json_object_new_string(o_from));
    if (o_description) json_object_object_add(j, "description", json_object_new_string(o_description));
    json_object_object_add(j, "vcpus", json_object_new_int((int)vcpus));
    json_object_object_add(j, "memory", json_object_new_int64(mem_kib * 1024));
    json_object_object_add(j, "disk", json_object_new_string("disk.qcow2"));
    json_object_object_add(j, "virtual_size", json_object_new_int64(vsize ? json_object_get_int64(vsize) : 0));
    if (kernel) json_object_object_add(j, "kernel", json_object_new_string("vmlinuz"));
    if (initrd) json_object_object_add(j, "initrd", json_object_new_string("initrd.img"));
    if (cmdline) json_object_object_add(j, "cmdline", json_object_new_string(cmdline));
    const char *text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    CLEANUP_FREE char *jpath = vm_strdup_printf("%s/template.json", tmp);
    if (vm_write_file_atomic(jpath, text, strlen(text), 0444) < 0)
      rc = vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s'", jpath);
  }
  /* Read-only on disk: nothing is meant to write into a base that clones share. */
  if (rc == 0 && chmod(disk, 0444) < 0) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot make '%s' read-only", disk);
  if (rc == 0 && rename(tmp, final) < 0)
    rc = vm_fail_errno(errno == EEXIST || errno == ENOTEMPTY ? VM_EXIT_STATE : VM_EXIT_FAIL,
                       "cannot create template '%s'", name);
  if (rc) vm_undo_run();
  else {
    vm_undo_forget();
    vm_info("created template '%s' from VM '%s'", name, o_from);
  }
out:
  vm_disks_free(disks, nd);
  return rc;
}

static struct poptOption list_options[] = { VM_POPT_COMMON, POPT_TABLEEND };

static int template_list(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, list_options, "", "List templates and how many clones each has.",
                    0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) return VM_EXIT_FAIL;
  CLEANUP_JSON json_object *rows = json_object_new_array();
  struct dirent **ents = NULL;
  int n = scandir(vm_template_dir(), &ents, NULL, alphasort);
  for (int i = 0; i < n; i++) {
    const char *name = ents[i]->d_name;
    struct template t;
    if (name[0] != '.' && vm_check_name("template", name) == 0) {
      CLEANUP_JSON json_object *j = NULL;
      if (template_load(name, &t) == 0) {
        j = load_json(t.dir);
        json_object *row = json_object_new_object(), *v;
        struct stat st;
        struct vm_strv users = { 0 };
        vm_image_users(conn, t.disk, NULL, &users);
        json_object_object_add(row, "name", json_object_new_string(name));
        json_object_object_add(row, "size", json_object_new_int64((int64_t)t.virtual_size));
        json_object_object_add(row, "allocated",
                               json_object_new_int64(stat(t.disk, &st) == 0 ? (int64_t)st.st_blocks * 512 : 0));
        json_object_object_add(row, "vcpus", json_object_new_int((int)t.vcpus));
        json_object_object_add(row, "memory", json_object_new_int64((int64_t)t.memory));
        json_object_object_add(row, "clones", json_object_new_int((int)users.n));
        const char *keys[] = { "created", "source", "description" };
        for (size_t k = 0; k < 3; k++)
          if (json_object_object_get_ex(j, keys[k], &v))
            json_object_object_add(row, keys[k], json_object_get(v));
        json_object_array_add(rows, row);
        vm_strv_free(&users);
        template_free(&t);
      }
    }
    free(ents[i]);
  }
  free(ents);
  if (n < 0 && errno != ENOENT)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot read template directory '%s'", vm_template_dir());
  return vm_print_list(rows, template_cols);
}

static struct poptOption delete_options[] = { VM_POPT_COMMON, POPT_TABLEEND };

static int template_delete(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, delete_options, "NAME...",
                    "Delete templates; a template with clones is kept.", 1, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) return VM_EXIT_FAIL;
  int first = 0;
  for (int i = 0; i < nargs; i++) {
    struct template t;
    if ((rc = template_load(args[i], &t))) {
      if (!first) first = rc;
      continue;
    }
    struct vm_strv users = { 0 };
    rc = vm_image_users(conn, t.disk, NULL, &users);
    if (rc == 0 && users.n) {
      CLEANUP_FREE char *list = NULL;
      for (size_t u = 0; u < users.n; u++) {
        char *l = vm_strdup_printf("%s%s'%s'", list ? list : "", list ? ", " : "", users.v[u]);
        free(list);
        list = l;
      }
      rc = vm_fail(VM_EXIT_STATE, "template '%s' has %zu clone%s: %s", args[i], users.n,
                   users.n == 1 ? "" : "s", list);
    } else if (rc == 0 && vm_remove_tree(t.dir) < 0) {
      rc = vm_fail_errno(VM_EXIT_FAIL, "cannot delete template '%s'", args[i]);
    } else if (rc == 0) {
      vm_info("deleted template '%s'", args[i]);
    }
    vm_strv_free(&users);
    template_free(&t);
    if (rc && !first) first = rc;
  }
  return first;
}

static const struct vm_verb template_verbs[] = {
  { "create", template_create, "seal a shut-off VM's boot disk into a template" },
  { "list", template_list, "list templates" },
  { "delete", template_delete, "delete templates that have no clones" },
  { NULL, NULL, NULL },
};

int cmd_template(int argc, char **argv)
{
  return vm_dispatch(argc, argv, template_verbs, "Templates: sealed, read-only boot disks that VMs clone.");
}
