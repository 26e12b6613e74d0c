/* libvmkit: the code every vmkit tool shares. Tools include this one header; it
 * never includes a tool's header. Everything it exports starts with vm_ or VM_. */
#ifndef VMKIT_H
#define VMKIT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <guestfs.h>
#include <json-c/json.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <popt.h>

#include "cleanup.h"

#define VM_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- Exit codes: the same in every tool, listed in vmkit(7) ---------------------- */
enum {
  VM_EXIT_OK = 0,
  VM_EXIT_FAIL = 1,     /* the operation failed */
  VM_EXIT_USAGE = 2,    /* bad option, argument, size or count */
  VM_EXIT_NOTFOUND = 3, /* no such VM, snapshot, image, template, file */
  VM_EXIT_STATE = 4,    /* wrong state or conflict (exists, running, in use) */
  VM_EXIT_TIMEOUT = 5,  /* a wait ran out of time */
  VM_EXIT_VERIFY = 6,   /* a check found something wrong */
};
/* Returned by vm_parse() when --help or --version was handled: exit 0. */
#define VM_DONE (-1)

/* ---- Messages (error.c) -------------------------------------------------------------
 * Every error is one line on stderr: "tool: what failed: why". The vm_fail family
 * prints it and returns the exit code so that callers can write
 *   return vm_fail(VM_EXIT_NOTFOUND, "no such VM '%s'", name);
 * Chatter (vm_info) goes to stderr too and is silenced by -q; vm_debug needs -v. */
extern const char *vm_progname;
void vm_init(const char *progname);
int vm_fail(int code, const char *fmt, ...) VM_PRINTF(2, 3);
int vm_fail_errno(int code, const char *fmt, ...) VM_PRINTF(2, 3);
/* Appends libvirt's last error and maps it to an exit code (no domain -> 3, ...).
 * A macro, so that the error is saved before the arguments are evaluated: most
 * libvirt calls, virDomainGetName among them, reset the last error. */
#define vm_fail_virt(...) \
  __extension__({ virErrorPtr vm_saved_ = virSaveLastError(); vm_fail_virt_saved(vm_saved_, __VA_ARGS__); })
int vm_fail_virt_saved(virErrorPtr saved, const char *fmt, ...) VM_PRINTF(2, 3);
int vm_virt_exit_code(void);
const char *vm_virt_message(void);
void vm_warn(const char *fmt, ...) VM_PRINTF(1, 2);
void vm_info(const char *fmt, ...) VM_PRINTF(1, 2);
void vm_debug(const char *fmt, ...) VM_PRINTF(1, 2);

/* Ctrl-C, SIGTERM and SIGHUP set a flag instead of killing the tool, so that long
 * work can stop at a safe point and undo what it made; SIGPIPE is ignored. */
void vm_catch_signals(void);
bool vm_interrupted(void);

/* ---- Options (options.c) ------------------------------------------------------------ */
enum vm_format { VM_FMT_TABLE, VM_FMT_TSV, VM_FMT_JSON };
struct vm_options {
  char *uri;        /* -c, --connect; NULL: libvirt's default (LIBVIRT_DEFAULT_URI) */
  char *virt_type;  /* --virt-type; resolved by vm_virt_type() */
  char *output;     /* -o table|tsv|json */
  enum vm_format format;
  int quiet, verbose, help, version, use_syslog;
};
extern struct vm_options vm_opts;
extern struct poptOption vm_common_table[];
#define VM_POPT_COMMON \
  { NULL, '\0', POPT_ARG_INCLUDE_TABLE, vm_common_table, 0, "Common options:", NULL }

/* A verb of a tool that has several (vmrun start, vmsnap create ...). run() gets
 * argv with argv[0] set to "tool verb". */
struct vm_verb {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
};
/* Runs the verb named by the first argument; handles --help, --version and bad
 * verbs for the tool as a whole. Returns the exit code. */
int vm_dispatch(int argc, char **argv, const struct vm_verb *verbs, const char *about);

/* Parses argv with the table (which includes VM_POPT_COMMON). The positional
 * arguments are returned in *args (NULL-terminated, owned by *ctx) and must number
 * between min and max (max < 0: any). Returns 0, VM_DONE after --help/--version,
 * or VM_EXIT_USAGE after printing the error. */
int vm_parse(poptContext *ctx, int argc, char **argv, const struct poptOption *table,
             const char *args_help, const char *about, int min, int max,
             const char ***args, int *nargs);
/* Reports a usage error: the one-line message, then "Try 'tool --help'". */
int vm_usage_error(const char *fmt, ...) VM_PRINTF(1, 2);

/* ---- Time ----------------------------------------------------------------------------- */
int64_t vm_now_ms(void);
void vm_sleep_ms(int ms);

/* ---- Strings and argv ----------------------------------------------------------------- */
struct vm_strv {
  char **v;   /* NULL-terminated */
  size_t n, cap;
};
void vm_strv_add(struct vm_strv *a, const char *s);
void vm_strv_addf(struct vm_strv *a, const char *fmt, ...) VM_PRINTF(2, 3);
void vm_strv_free(struct vm_strv *a);
bool vm_strv_contains(char *const *v, const char *s);
/* Quotes a word for display as shell input (dry runs, verbose logs, errors). */
char *vm_shell_quote(const char *s);
char *vm_argv_str(char *const argv[]);
char *vm_strdup_printf(const char *fmt, ...) VM_PRINTF(1, 2);
/* Reads a whole small file (a key, a password); NULL with errno set on failure. */
char *vm_read_file(const char *path, size_t max, size_t *len);
/* The first line of a file, without its newline (secrets: never on argv). */
char *vm_read_first_line(const char *path);
/* Copies a regular file (a kernel, an initrd: not images, which go through
 * qemu-img); dst is created with mode and must not exist. 0 or -1 with errno. */
int vm_copy_file(const char *src, const char *dst, unsigned mode);
/* Writes a file whole and durably: to PATH.tmp, fsync, rename. 0 or -1 with errno. */
int vm_write_file_atomic(const char *path, const char *data, size_t len, unsigned mode);
/* "2026-11-21T23:37:56Z" for now. */
void vm_iso_time(char buf[static 32]);

/* ---- Running programs (run.c) ----------------------------------------------------------
 * Programs get an argv, never a shell string. stdout and stderr are captured when
 * out/err are not NULL; otherwise stdout goes to /dev/null and stderr is kept for
 * the error message. Returns the exit status, or -1 when it could not run or was
 * killed by a signal. */
int vm_run(char *const argv[], char **out, char **err);
/* Runs argv; on failure prints "tool: PROGRAM failed: LAST LINE OF STDERR" and
 * returns VM_EXIT_FAIL. With -v the command line is shown first. */
int vm_run_checked(char *const argv[], char **out);

/* ---- Sizes (size.c) --------------------------------------------------------------------
 * "4G", "512M", "1.5T", "100K", "4096B", "2GiB": binary units. A bare number is in
 * default_unit ('B', 'K', 'M', 'G', 'T'). Returns 0, or -1 when s is not a size. */
int vm_parse_size(const char *s, char default_unit, uint64_t *bytes);
/* Human form for tables: "0", "512K", "1.5G". Returns buf. */
const char *vm_format_size(uint64_t bytes, char buf[static 16]);
/* "90s", "30m", "12h", "7d", "2w" (a bare number is seconds) to seconds; -1 if not one. */
int vm_parse_duration(const char *s, int64_t *seconds);
/* Parses a whole decimal number within [min, max]; -1 if not one. */
int vm_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* ---- Output (output.c) ------------------------------------------------------------------
 * Results are built as json-c objects; the formats are views of them. table aligns
 * columns under a header and shows sizes in human units; tsv has no header and raw
 * numbers, for pipelines; json prints the objects themselves. */
enum vm_col_kind { VM_COL_STR, VM_COL_INT, VM_COL_BYTES, VM_COL_RATE, VM_COL_PCT, VM_COL_BOOL };
struct vm_column {
  const char *key;
  const char *header;
  enum vm_col_kind kind;
};
/* A list of flat objects, one row each. Returns 0 or VM_EXIT_FAIL on write error. */
int vm_print_list(json_object *rows, const struct vm_column *cols);
/* One object: table prints "key: value" lines (nested lists indented), tsv prints
 * "key<TAB>value" lines, json the object. cols give kinds for human units. */
int vm_print_record(json_object *obj, const struct vm_column *cols);
/* Progress of long work on stderr, only when it is a terminal and not -q. */
void vm_progress(const char *what, uint64_t done, uint64_t total);
void vm_progress_end(void);

/* ---- libvirt (conn.c) ------------------------------------------------------------------ */
/* Connects to vm_opts.uri (or libvirt's default); prints the error and returns NULL
 * on failure. */
virConnectPtr vm_connect(void);
/* Finds a domain by name, then UUID. 0, or VM_EXIT_NOTFOUND with "no such VM". */
int vm_lookup(virConnectPtr conn, const char *name, virDomainPtr *dom);
/* Connects and finds the VM: what most verbs do first. 0 or an exit code. */
int vm_open(const char *name, virConnectPtr *conn, virDomainPtr *dom);
int vm_domain_state(virDomainPtr dom);
const char *vm_state_name(int state);
int vm_state_parse(const char *name); /* -1 if unknown */
/* "kvm" or "qemu": --virt-type, else VMKIT_VIRT_TYPE, else kvm when /dev/kvm opens. */
const char *vm_virt_type(void);
/* Names that become file names and XML must be plain: letters, digits, '.', '_',
 * '-', not starting with '.' or '-', at most 64 bytes. Returns 0 or VM_EXIT_USAGE. */
int vm_check_name(const char *what, const char *name);
/* Where new disks go (VMKIT_STORAGE_DIR) and where templates live (VMKIT_TEMPLATE_DIR). */
const char *vm_storage_dir(void);
const char *vm_template_dir(void);

/* ---- Events (events.c) --------------------------------------------------------------
 * vm_events_init() starts libvirt's event loop on a thread; call it before
 * vm_connect(). A pause watch then measures, from the domain's lifecycle events,
 * how many milliseconds its vCPUs were paused between start and stop (-1 when
 * events are not available). stop waits up to settle_ms for a pending RESUMED. */
int vm_events_init(void);
struct vm_pause_watch;
struct vm_pause_watch *vm_pause_watch_start(virConnectPtr conn, virDomainPtr dom);
long vm_pause_watch_stop(struct vm_pause_watch *w, int settle_ms);

/* A job that excludes another operation (a migration, a backup, a block job):
 * 0 when none runs, else VM_EXIT_STATE after "cannot WHAT 'VM': a backup job is
 * running". */
int vm_domain_idle(virDomainPtr dom, const char *what);

/* ---- XML (xml.c) ----------------------------------------------------------------------- */
#define VM_META_NS "https://vmkit.dev/xmlns/domain/1"
#define VM_META_PREFIX "vmkit"
xmlDocPtr vm_xml_parse(const char *xml);
/* The domain's XML, parsed (flags as virDomainGetXMLDesc). NULL after an error. */
xmlDocPtr vm_domain_doc(virDomainPtr dom, unsigned int flags);
xmlXPathContextPtr vm_xpath_ctx(xmlDocPtr doc);
/* The string value of an XPath expression; NULL when empty or absent. */
char *vm_xpath_str(xmlXPathContextPtr ctx, const char *expr);
/* The numeric value, or dflt when absent or not a number. */
long long vm_xpath_ll(xmlXPathContextPtr ctx, const char *expr, long long dflt);
xmlXPathObjectPtr vm_xpath_nodes(xmlXPathContextPtr ctx, const char *expr);
char *vm_xml_prop(xmlNodePtr node, const char *name);
xmlNodePtr vm_xml_child(xmlNodePtr parent, const char *name, const char *text);
void vm_xml_set(xmlNodePtr node, const char *attr, const char *value);
void vm_xml_setf(xmlNodePtr node, const char *attr, const char *fmt, ...) VM_PRINTF(3, 4);
char *vm_xml_dump(xmlDocPtr doc);

/* ---- Domain definitions (domxml.c) ----------------------------------------------------- */
#define VM_MAX_DEVS 16
struct vm_spec_disk {
  const char *path;
  const char *format;  /* qcow2, raw */
  const char *device;  /* disk, cdrom */
  bool readonly;
};
struct vm_spec_nic {
  const char *type;    /* user, network, bridge */
  const char *source;  /* network or bridge name */
  const char *mac;     /* NULL: libvirt chooses */
};
struct vm_spec {
  const char *name;
  const char *virt_type;
  unsigned vcpus;
  uint64_t memory;        /* bytes */
  const char *kernel, *initrd, *cmdline;
  struct vm_spec_disk disks[VM_MAX_DEVS];
  size_t ndisks;
  struct vm_spec_nic nics[VM_MAX_DEVS];
  size_t nnics;
  const char *console_log;
  /* vmkit's own metadata, kept in the domain XML under VM_META_NS. */
  const char *meta_template;
};
/* The domain XML for a spec, written with libxml2. Disks get vda, vdb ... on
 * virtio; CD-ROMs sda ... on SATA. Caller frees. */
char *vm_spec_xml(const struct vm_spec *spec);

struct vm_disk {
  char *target, *device, *type, *source, *format, *bus;
  bool readonly;
};
/* The disks of a parsed domain definition. */
int vm_domain_disks(xmlDocPtr doc, struct vm_disk **disks, size_t *n);
void vm_disks_free(struct vm_disk *disks, size_t n);
/* vmkit metadata element text (e.g. "template"), or NULL. */
char *vm_domain_meta(xmlDocPtr doc, const char *key);
/* A metadata element of vmkit's own in namespace ns (one element per namespace,
 * kept by libvirt with the domain, so it travels with it to any host): read
 * (NULL when absent) and written to the live and the persistent definition.
 * Writing NULL removes it. */
xmlDocPtr vm_meta_read(virDomainPtr dom, const char *ns);
int vm_meta_write(virDomainPtr dom, const char *ns, const char *prefix, xmlDocPtr doc);

/* ---- Images (image.c) ------------------------------------------------------------------- */
/* `qemu-img info -U --output=json [--backing-chain] PATH`, parsed. With a chain the
 * result is an array, top image first. NULL after printing an error. */
json_object *vm_image_info(const char *path, bool chain);
/* Real paths of every file in PATH's backing chain, PATH itself first. */
int vm_image_chain(const char *path, struct vm_strv *files);
/* Names of the domains (other than except) whose disks are, or are backed by, the
 * image at path. Scans every defined domain. */
int vm_image_users(virConnectPtr conn, const char *path, const char *except,
                   struct vm_strv *users);
/* True when path is inside the template directory. */
bool vm_image_is_template(const char *path);
/* True when vmkit named the file after the VM (VM.qcow2, VM-disk1.qcow2,
 * VM-vda.SNAP.qcow2 ...): the VM's own files, which removing the VM may remove. */
bool vm_image_named_for(const char *path, const char *vm);

/* ---- libguestfs (gfs.c) ------------------------------------------------------------------ */
/* A handle whose errors are reported through vm_fail_gfs, using the direct backend
 * with TCG when the virt type is qemu (otherwise a launch hangs where KVM does). */
guestfs_h *vm_gfs_open(void);
int vm_fail_gfs(guestfs_h *g, const char *fmt, ...) VM_PRINTF(2, 3);
/* Mounts the guest's filesystems: by inspection when an OS is found, else the one
 * filesystem that holds /etc. Returns 0 or an exit code after printing. */
int vm_gfs_mount_guest(guestfs_h *g, const char *disk_desc);

/* ---- Undo (undo.c) ------------------------------------------------------------------------
 * Work that makes several things (disks, then a domain) registers each as it is
 * made; vm_undo_run() removes them in reverse order when a later step fails, so
 * nothing half-made is left behind. vm_undo_forget() commits. */
void vm_undo_file(const char *path);
/* Claims a new file's path with O_EXCL (two tools can never share it) and
 * registers its removal. 0, or VM_EXIT_STATE when it exists, after a message. */
int vm_undo_new_file(const char *path);
void vm_undo_dir(const char *path);
void vm_undo_domain(virDomainPtr dom);
void vm_undo_run(void);
void vm_undo_forget(void);
/* Removes a directory tree (our own scratch and template folders only). */
int vm_remove_tree(const char *path);

/* ---- The hosts file (hosts.c) -------------------------------------------------------------
 * One host a line: NAME URI [TAG...]; '#' starts a comment. */
struct vm_host {
  char *name, *uri;
  struct vm_strv tags;
};
struct vm_hosts {
  struct vm_host *v;
  size_t n;
};
/* path NULL: VMKIT_HOSTS, else /etc/vmkit/hosts. Returns 0 or an exit code. */
int vm_hosts_load(const char *path, struct vm_hosts *hosts);
/* Parses text; on error returns -1 and sets *line to the bad line number. */
int vm_hosts_parse(const char *text, struct vm_hosts *hosts, int *line);
const struct vm_host *vm_hosts_find(const struct vm_hosts *hosts, const char *name);
void vm_hosts_free(struct vm_hosts *hosts);

#endif
