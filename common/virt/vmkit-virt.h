/* libvmkit-virt: the layer of the shared library that speaks to libvirt (domains,
 * storage pools and volumes, events, metadata, per-VM locks, the journal that
 * lets a run finish or roll back what a killed run started) and reads and writes
 * XML with libxml2. It stands on libvmkit-base. */
#ifndef VMKIT_VIRT_H
#define VMKIT_VIRT_H

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>

#include "vmkit-base.h"

/* ---- Cleanups ---------------------------------------------------------------------- */
void vm_cleanup_virconn(void *ptr);
void vm_cleanup_virdomain(void *ptr);
void vm_cleanup_virdomain_array(void *ptr);
void vm_cleanup_virpool(void *ptr);
void vm_cleanup_virvol(void *ptr);
void vm_cleanup_virstream(void *ptr);
void vm_cleanup_xmldoc(void *ptr);
void vm_cleanup_xpathctx(void *ptr);
void vm_cleanup_xpathobj(void *ptr);
void vm_cleanup_xmlfree(void *ptr);
#define CLEANUP_VIRCONN    __attribute__((cleanup(vm_cleanup_virconn)))
#define CLEANUP_VIRDOMAIN  __attribute__((cleanup(vm_cleanup_virdomain)))
/* An array from virConnectListAllDomains: each element freed, then the array. */
#define CLEANUP_VIRDOMAINS __attribute__((cleanup(vm_cleanup_virdomain_array)))
#define CLEANUP_VIRPOOL    __attribute__((cleanup(vm_cleanup_virpool)))
#define CLEANUP_VIRVOL     __attribute__((cleanup(vm_cleanup_virvol)))
/* A stream: aborted when still open, then freed. */
#define CLEANUP_VIRSTREAM  __attribute__((cleanup(vm_cleanup_virstream)))
#define CLEANUP_XMLDOC     __attribute__((cleanup(vm_cleanup_xmldoc)))
#define CLEANUP_XPATHCTX   __attribute__((cleanup(vm_cleanup_xpathctx)))
#define CLEANUP_XPATHOBJ   __attribute__((cleanup(vm_cleanup_xpathobj)))
#define CLEANUP_XMLFREE    __attribute__((cleanup(vm_cleanup_xmlfree)))

/* ---- libvirt's errors (virterr.c) -----------------------------------------------------
 * libvirt prints every error to stderr by default; vm_virt_init() silences that once
 * (vm_connect calls it), and vmkit folds libvirt's message into its own one line. */
void vm_virt_init(void);
/* Appends libvirt's last error and maps it to an exit code (no domain -> 3, ...).
 * A macro, so that the error is saved before the arguments are evaluated: most
 * libvirt calls, virDomainGetName among them, reset the last error. */
#define vm_fail_virt(...) \
  __extension__({ virErrorPtr vm_saved_ = virSaveLastError(); vm_fail_virt_saved(vm_saved_, __VA_ARGS__); })
int vm_fail_virt_saved(virErrorPtr saved, const char *fmt, ...) VM_PRINTF(2, 3);
int vm_virt_exit_code(void);
const char *vm_virt_message(void);
/* libvirt's last error code (VIR_ERR_OK when none). */
int vm_virt_error_code(void);

/* ---- Connections and domains (conn.c) ----------------------------------------------- */
/* Connects to vm_opts.uri (a URI or a host of the hosts file; NULL: libvirt's
 * default); prints the error and returns NULL on failure. */
virConnectPtr vm_connect(void);
virConnectPtr vm_connect_to(const char *uri_or_host);
/* True when the connection's daemon sees this machine's files: its URI names no
 * remote host and the daemon's host name is this machine's (a daemon in another
 * mount and UTS namespace, as tests run one, is remote). Only then does vmkit read
 * or write a VM's files directly (console logs, disks in no storage pool). */
bool vm_conn_is_local(virConnectPtr conn);
/* The host's UUID (libvirt capabilities), the key of its locks; NULL on error. */
const char *vm_conn_host_uuid(virConnectPtr conn);
/* Forgets what was learned about a connection (CLEANUP_VIRCONN calls it). */
void vm_conn_forget(virConnectPtr conn);
/* The host's name for messages ("kvm2"). */
const char *vm_conn_host_name(virConnectPtr conn);
/* The host's capabilities document (virConnectGetCapabilities), parsed; NULL with
 * one error line when it cannot be read. The caller frees it (CLEANUP_XMLDOC). */
xmlDocPtr vm_conn_caps(virConnectPtr conn);
/* Finds a domain by name, then UUID. 0, or VM_EXIT_NOTFOUND with "no such VM". */
int vm_lookup(virConnectPtr conn, const char *name, virDomainPtr *dom);
/* Connects and finds the VM: what most verbs do first. 0 or an exit code. */
int vm_open(const char *name, virConnectPtr *conn, virDomainPtr *dom);
int vm_domain_state(virDomainPtr dom);
/* Forces a running domain off: 0 when it is off (already, or by itself meanwhile),
 * else the exit code after "cannot force VM 'x' off [WHY]: libvirt's reason". */
int vm_force_off(virDomainPtr dom, const char *why);
const char *vm_state_name(int state);
int vm_state_parse(const char *name); /* -1 if unknown */
/* "kvm" or "qemu": --virt-type, else VMKIT_VIRT_TYPE, else kvm when /dev/kvm opens. */
const char *vm_virt_type(void);
/* The same for the domains of a connection's host: there, without an option or
 * VMKIT_VIRT_TYPE, kvm when the host's capabilities offer it. */
const char *vm_virt_type_of(virConnectPtr conn);
/* Names that become volume names and XML must be plain: letters, digits, '.', '_',
 * '-', not starting with '.' or '-', at most 64 bytes. Returns 0 or VM_EXIT_USAGE. */
int vm_check_name(const char *what, const char *name);
/* The same test without a message: true when the name is a valid one. */
bool vm_name_ok(const char *name);
/* A job that excludes another operation (a migration, a backup, a block job):
 * 0 when none runs, else VM_EXIT_STATE after "cannot WHAT 'VM': a backup job is
 * running". */
int vm_domain_idle(virDomainPtr dom, const char *what);

/* ---- Locks on a VM and on host objects (vmlock.c) -------------------------------------
 * Every verb that changes a VM holds its lock, keyed by the host's UUID and the
 * VM's UUID, for its whole run (base layer: held by the process, released by its
 * death, waited for up to --lock-wait). */
int vm_lock_domain(virConnectPtr conn, virDomainPtr dom);
/* The same key for a VM known by its UUID (before it is defined). */
int vm_lock_domain_uuid(virConnectPtr conn, const char *uuid, const char *name);
/* The PID of a process of this machine that holds the lock of the VM of UUID on
 * the host of HOST_UUID (a move, a snapshot in progress), 0 when none, -1 on error.
 * On the thread that takes and releases this process's locks. */
pid_t vm_lock_domain_holder(const char *host_uuid, const char *uuid);
/* Locks the VM, then finishes or rolls back what a killed run left on it (the
 * journal records the shared code knows: create, undefine). A record of another
 * operation is left alone and named in *other (caller frees) for its tool. 0, or
 * an exit code after a message (3 when the VM went with a rolled-back create). */
int vm_lock_and_recover(virConnectPtr conn, virDomainPtr *dom, const char *name, char **other);
/* vm_open, then vm_lock_and_recover. */
int vm_open_locked(const char *name, virConnectPtr *conn, virDomainPtr *dom, char **other);
/* A lock on another object of a host: KIND "template", NAME "pool/name". */
int vm_lock_object(virConnectPtr conn, const char *kind, const char *name, bool shared, const char *what);

/* ---- Events (events.c) --------------------------------------------------------------
 * vm_events_init() starts libvirt's event loop on a thread; call it before
 * vm_connect(). A pause watch then measures, from the domain's lifecycle events,
 * how many milliseconds its vCPUs were paused between start and stop (-1 when
 * events are not available). stop waits up to settle_ms for a pending RESUMED. */
int vm_events_init(void);
struct vm_pause_watch;
struct vm_pause_watch *vm_pause_watch_start(virConnectPtr conn, virDomainPtr dom);
long vm_pause_watch_stop(struct vm_pause_watch *w, int settle_ms);

/* ---- The serial console and the guest agent (console.c) ---------------------------------
 * A follower finds a line containing some text in what a VM prints on its serial
 * console: from the log file virtlogd writes (path, read from offset on each call;
 * local hosts only) or from a non-blocking console stream (virDomainOpenConsole,
 * read as libvirt's event loop receives it). sink, when set, sees every byte read. */
struct vm_follower {
  const char *path;
  off_t offset;
  char partial[4096];
  size_t plen;
  void (*sink)(void *arg, const char *buf, size_t n);
  void *sink_arg;
};
/* The serial console's log file in a domain definition, or NULL. */
char *vm_console_log_path(xmlDocPtr doc);
/* Does text come in these bytes (line by line; a last line without its newline,
 * such as a login prompt, counts)? */
bool vm_follow_scan(struct vm_follower *f, const char *buf, size_t n, const char *text);
/* Reads what the stream has now; *gone when the console closed. */
bool vm_follow_stream(virStreamPtr st, struct vm_follower *f, const char *text, bool *gone);
/* Reads what the log file gained since the last call. */
bool vm_follow_log(struct vm_follower *f, const char *text);
/* Does the guest agent answer a ping (2 s)? */
bool vm_agent_answers(virDomainPtr dom);
/* Runs argv in the guest through its agent (guest-exec: argv[0] a path or a
 * name for the guest's PATH) and waits up to timeout_s for it to end. *exit_code:
 * its exit code (128 + N when signal N ended it); *out (when not NULL): its
 * standard output. 0, or an exit code after a message (5 at the timeout; the
 * program then goes on in the guest). (agent.c) */
int vm_agent_exec(virDomainPtr dom, char *const argv[], int timeout_s, int *exit_code, char **out);
/* Writes len bytes of data to path in the guest through its agent (guest-file-open
 * with mode "w", then guest-file-write in pieces of 1 MiB, guest-file-close): the
 * file is created or truncated, its folder must exist. 0, or an exit code after a
 * message. (agent.c) */
int vm_agent_write_file(virDomainPtr dom, const char *path, const char *data, size_t len);
/* The same, what fd reads to its end. */
int vm_agent_write_fd(virDomainPtr dom, const char *path, int fd);

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
/* An XPath string literal for any text (concat() when it holds both quotes). */
char *vm_xpath_literal(const char *s);
char *vm_xml_prop(xmlNodePtr node, const char *name);
/* Adds a child element (with text when not NULL). */
xmlNodePtr vm_xml_child(xmlNodePtr parent, const char *name, const char *text);
/* The first child element of that name, or NULL. */
xmlNodePtr vm_xml_find(xmlNodePtr parent, const char *name);
void vm_xml_set(xmlNodePtr node, const char *attr, const char *value);
void vm_xml_setf(xmlNodePtr node, const char *attr, const char *fmt, ...) VM_PRINTF(3, 4);
char *vm_xml_dump(xmlDocPtr doc);
/* One element and its children as text (a device for virDomainUpdateDeviceFlags). */
char *vm_xml_node_dump(xmlNodePtr node);

/* ---- Domain definitions (domxml.c) ----------------------------------------------------- */
#define VM_MAX_DEVS 16
struct vm_spec_disk {
  const char *path;    /* NULL: an empty CD-ROM drive */
  const char *format;  /* qcow2, raw */
  const char *device;  /* disk, cdrom */
  const char *type;    /* file (default), block */
  bool readonly;
  const char *secret;  /* a LUKS-encrypted qcow2: its secret's UUID */
};
struct vm_spec_nic {
  const char *type;    /* user, network, bridge */
  const char *source;  /* network or bridge name */
  const char *mac;     /* NULL: libvirt chooses */
  bool unplugged;      /* the cable out: <link state='down'/> */
  const char *filter;  /* a libvirt nwfilter (clean-traffic...) on it, or NULL */
  const char *ip;      /* with filter: the guest's IPv4 (the filter's IP); NULL: learned */
  char **tcp_ports, **udp_ports; /* with an inbound filter: its TCP_PORTS and UDP_PORTS */
};
struct vm_spec {
  const char *name;
  const char *uuid;       /* NULL: libvirt chooses */
  const char *virt_type;
  unsigned vcpus;
  uint64_t memory;        /* bytes */
  const char *kernel, *initrd, *cmdline;
  const char *firmware;   /* NULL: BIOS; "efi": UEFI, libvirt picks the firmware */
  struct vm_spec_disk disks[VM_MAX_DEVS];
  size_t ndisks;
  struct vm_spec_nic nics[VM_MAX_DEVS];
  size_t nnics;
  const char *console_log;
  /* The guest's CPU: a model name, or a whole <cpu> definition (as vmmigrate
   * baseline prints it); neither: host-model under KVM, QEMU's default under TCG. */
  const char *cpu_model, *cpu_xml;
  /* vmkit's own metadata, kept in the domain XML under VM_META_NS. */
  const char *meta_template;
  /* A journal record to define the domain with (see journal.c), or NULL. */
  xmlDocPtr journal;
};
/* A NIC as the tools' --network option names it: user, network=NAME or bridge=BR
 * (nic points into spec). 0, or -1 for anything else. */
int vm_nic_parse(const char *spec, struct vm_spec_nic *nic);
/* Sets, or with filter NULL removes, the <filterref> of an <interface> node: the
 * filter's name, and the guest's IP as its IP parameter (NULL: libvirt learns it
 * from the guest's first packets), and with an inbound filter the ports it lets in
 * (NULL or none: port 0 only, which no connection uses). */
void vm_nic_set_filter(xmlNodePtr nic, const char *filter, const char *ip, char *const *tcp_ports,
                       char *const *udp_ports);
/* 0 when the host has the nwfilter NAME; else an exit code after a message (3: none). */
int vm_nwfilter_check(virConnectPtr conn, const char *name);
/* The inbound firewall over the filter BASE (man vmrun: --allow-port), defined on
 * the host when missing; *name its name (caller frees). 0, or an exit code after a
 * message. */
#define VM_INBOUND_FILTER_PREFIX "vmkit-inbound-"
int vm_nwfilter_inbound(virConnectPtr conn, const char *base, char **name);
/* The options --filter[=NAME], --ip ADDR and --allow-port PORT[/udp] of the verbs
 * that filter a VM's NICs (vmrun create and tune), in their option tables. */
extern struct poptOption vm_filter_table[];
#define VM_POPT_FILTER { NULL, '\0', POPT_ARG_INCLUDE_TABLE, vm_filter_table, 0, NULL, NULL }
struct vm_filter_opts {
  const char *filter;   /* NULL: no filter asked for; "clean-traffic" for --filter alone;
                         * "none" as given; --allow-port alone implies clean-traffic */
  bool named;           /* --filter itself given (not only implied by --allow-port) */
  const char *ip;       /* --ip, checked */
  bool ports;           /* --allow-port given */
  struct vm_strv tcp, udp; /* its ports */
};
/* The options as given, checked against each other: 0, or exit 2 after a message. */
int vm_filter_opts_get(struct vm_filter_opts *o);
void vm_filter_opts_free(struct vm_filter_opts *o);
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
 * kept by libvirt with the domain, so it travels with it to any host). Read: 0 with
 * *out NULL when there is none, 0 with the document, or an exit code after a
 * message when libvirt failed (which must never pass for "none"). Write: to the
 * live and the persistent definition; NULL removes it. */
int vm_meta_read(virDomainPtr dom, const char *ns, xmlDocPtr *out);
int vm_meta_write(virDomainPtr dom, const char *ns, const char *prefix, xmlDocPtr doc);
/* Puts a metadata element into a domain definition document (replacing one of the
 * same namespace), for definitions written whole (a revert). */
void vm_doc_set_meta(xmlDocPtr domain, const char *ns, const char *prefix, xmlDocPtr element);

/* ---- Storage pools and volumes (storage.c) ----------------------------------------------
 * Every disk image the tools create, inspect, copy or remove goes through libvirt's
 * storage pools and volumes, so that a verb works the same on this host and through
 * a remote URI. A file in no pool is used directly only on a local connection. */
/* The pool new VM disks go to (VMKIT_POOL, else "default") and the one templates
 * live in (VMKIT_TEMPLATE_POOL, else "vmkit-templates"). */
const char *vm_default_pool(void);
const char *vm_default_template_pool(void);
/* Finds a pool by name and makes sure it is running. A default pool that does not
 * exist is defined, built, started and marked autostart, as virt-install does
 * ("default" at /var/lib/libvirt/images, "vmkit-templates" at
 * /var/lib/vmkit/templates), with a message saying so. 0, 3 (no such pool) or 1. */
int vm_pool_open(virConnectPtr conn, const char *name, virStoragePoolPtr *pool);
/* Pools whose volumes are files (dir, fs, netfs, gluster ...): they hold qcow2
 * overlays. Others (logical, iscsi, rbd ...) hold what their type can. */
bool vm_pool_is_file_based(virStoragePoolPtr pool);
char *vm_pool_type(virStoragePoolPtr pool);
/* The pool's target folder (or device folder); NULL on error. */
char *vm_pool_target(virStoragePoolPtr pool);
/* Refreshes a pool (files made outside libvirt's knowledge appear, chains are read
 * again). 0 or 1 after a message. */
int vm_pool_refresh(virStoragePoolPtr pool);

/* What a volume holds; from libvirt's volume XML (its pool refreshed first), or
 * from qemu-img info on a local connection for a file in no pool. */
struct vm_imginfo {
  char *path, *format, *backing, *backing_format;
  uint64_t capacity, allocation;
  bool in_pool;
  char *pool; /* its pool's name, NULL when in none */
};
void vm_imginfo_free(struct vm_imginfo *i);
/* 0, VM_EXIT_NOTFOUND quietly when there is no such file, or an exit code after a
 * message (a file in no pool on a remote host: "... is in no storage pool of HOST"). */
int vm_image_info(virConnectPtr conn, const char *path, struct vm_imginfo *info);
/* The same without messages, for scans over other VMs' disks. */
int vm_image_info_quiet(virConnectPtr conn, const char *path, struct vm_imginfo *info);
/* Says that vmkit changed images (a merge, a new overlay): the next look at a pool
 * refreshes it first. */
void vm_storage_changed(void);
/* Finds the volume at path: 0, VM_EXIT_NOTFOUND quietly when no pool holds it, or
 * an exit code after a message. A miss refreshes the pool whose folder holds path
 * and looks again. */
int vm_vol_find(virConnectPtr conn, const char *path, virStorageVolPtr *vol);
/* Does a file exist on the host (in a pool, or locally on a local connection)? */
bool vm_path_exists(virConnectPtr conn, const char *path);
/* Creates volume NAME in pool: a qcow2 (or the pool's kind) of capacity bytes,
 * standing on backing when given (a linked clone). Mode 0600 unless mode is set.
 * VM_EXIT_STATE when it exists. *vol may be NULL. */
struct vm_volspec {
  const char *name, *format;
  uint64_t capacity;
  const char *backing, *backing_format;
  unsigned mode; /* 0: 0600 */
  const char *secret; /* qcow2 encrypted with LUKS, the key this secret's (on the pool's host) */
};
int vm_vol_create(virStoragePoolPtr pool, const struct vm_volspec *spec, virStorageVolPtr *vol);
/* A full copy of src into pool (qemu-img convert by libvirt: the chain flattened). */
int vm_vol_create_from(virStoragePoolPtr pool, const struct vm_volspec *spec, virStorageVolPtr src,
                       virStorageVolPtr *vol);
/* The active pool whose folder holds path: 0, or VM_EXIT_NOTFOUND quietly. */
int vm_pool_of_path(virConnectPtr conn, const char *path, virStoragePoolPtr *pool);
/* A new qcow2 overlay at path on backing (same virtual size), through the pool whose
 * folder holds path; with qemu-img only for a local folder in no pool. VM_EXIT_STATE
 * when path exists. */
int vm_overlay_create(virConnectPtr conn, const char *path, const char *backing, const char *backing_format);
/* Removes the file at path through libvirt; a file in no pool only on a local
 * connection. A missing file is fine (0). */
int vm_path_delete(virConnectPtr conn, const char *path);
/* Streams, sparse: only allocated data crosses. */
int vm_vol_upload_file(virStorageVolPtr vol, const char *local_path);
int vm_vol_download_file(virStorageVolPtr vol, const char *local_path);
int vm_vol_copy(virStorageVolPtr src, virStorageVolPtr dst, const char *what);
/* Small volumes holding text (a template's record). */
int vm_vol_write_text(virStorageVolPtr vol, const char *text);
char *vm_vol_read_text(virStorageVolPtr vol, size_t max);
/* Is path a template's image (its pool holds a template record naming it)? */
bool vm_image_is_template(virConnectPtr conn, const char *path);

/* ---- Image chains and who stands on them (image.c) ------------------------------------- */
/* Paths of every file in path's backing chain, path itself first. */
int vm_image_chain(virConnectPtr conn, const char *path, struct vm_strv *files);
/* Names of the domains (other than except) whose disks are, or are backed by, the
 * image at path. Scans every defined domain. */
int vm_image_users(virConnectPtr conn, const char *path, const char *except, struct vm_strv *users);
/* True when vmkit named the file after the VM: VM.qcow2, VM-diskN.qcow2,
 * VM-TARGET.LABEL.qcow2, VM.LABEL.mem: the VM's own files. */
bool vm_image_named_for(const char *path, const char *vm);

/* ---- Undo (undo.c) ------------------------------------------------------------------------
 * Work that makes several things (volumes, then a domain) registers each as it is
 * made; vm_undo_run() removes them in reverse order when a later step fails, so
 * nothing half-made is left behind. vm_undo_forget() commits. A list starts as
 * struct vm_undo u = { 0 }. */
struct vm_undo_item;
struct vm_undo {
  struct vm_undo_item *v;
  size_t n;
};
void vm_undo_volume(struct vm_undo *u, virConnectPtr conn, const char *path);
void vm_undo_local_file(struct vm_undo *u, const char *path);
void vm_undo_local_dir(struct vm_undo *u, const char *path);
void vm_undo_domain(struct vm_undo *u, virDomainPtr dom);
/* A disk key made by the run: its secret on the host and its key file here. */
void vm_undo_secret(struct vm_undo *u, virConnectPtr conn, const char *uuid);
void vm_undo_run(struct vm_undo *u);
void vm_undo_forget(struct vm_undo *u);

/* ---- Disk keys (secret.c) ------------------------------------------------------------------
 * An encrypted VM's disks are qcow2 with LUKS, their passphrase a private libvirt
 * secret on the VM's host, named by UUID in the disk's <encryption>. vmkit keeps
 * each key root-only on the machine that runs it, in vm_key_dir() (0700, files
 * UUID.key 0600: $VMKIT_KEY_DIR, else /var/lib/vmkit/keys), since libvirt does not
 * give a private secret back; vm_secret_ensure defines a VM's secret on a host
 * from there before the VM runs or its disks are opened there (vmkit(7)). */
#define VM_SECRET_DESC_PREFIX "vmkit: the disk key of VM "
const char *vm_key_dir(void);
char *vm_key_path(const char *uuid);
/* 64 random hex digits; NULL after a message. Free with vm_key_free. */
char *vm_key_new(void);
int vm_key_save(const char *uuid, const char *key);
/* 0, VM_EXIT_NOTFOUND, or an exit code, each after a message. */
int vm_key_load(const char *uuid, char **key);
void vm_key_free(char *key);
int vm_key_remove(const char *uuid);
char *vm_secret_description(const char *vm);
/* Defines the private secret uuid on conn's host with key as its value. */
int vm_secret_put(virConnectPtr conn, const char *uuid, const char *vm, const char *key);
/* The secret is on the host (taken as it is), or is defined there from the key this
 * machine keeps (*made then true); one whose define was interrupted is finished. */
int vm_secret_ensure(virConnectPtr conn, const char *uuid, const char *vm);
int vm_secret_ensure_made(virConnectPtr conn, const char *uuid, const char *vm, bool *made);
/* Does a domain of conn (other than except) name the secret? True when it cannot tell. */
bool vm_secret_in_use(virConnectPtr conn, const char *uuid, const char *except);
/* No core dump of a process that holds a key. */
void vm_key_protect(void);
/* QEMU times its LUKS key derivation (PBKDF) on the CPU clock of the thread, and
 * fails when the clock does not move in its sample ("Unable to get accurate CPU
 * usage"), which a loaded host makes likely: worth another try, up to
 * VM_LUKS_TIMING_RETRIES more times. Does the error text why (libvirt's, or
 * qemu-img's last line; may be NULL) say so? */
#define VM_LUKS_TIMING_RETRIES 3
bool vm_luks_timing_failed(const char *why);
/* Undefines it on the host (missing is fine), and with key_too removes the key. */
int vm_secret_remove(virConnectPtr conn, const char *uuid, bool key_too);
/* Was the secret made by vmkit (its description), or is its key kept here? */
bool vm_secret_is_ours(virConnectPtr conn, const char *uuid);
/* The secret UUIDs that a domain's disks name (added to out, once each). */
void vm_domain_secrets(xmlDocPtr doc, struct vm_strv *out);
/* Does any disk of the domain name a secret (an encrypted disk)? */
bool vm_domain_encrypted(xmlDocPtr doc);
/* Each encrypted disk's source path and secret UUID, in parallel lists. */
void vm_domain_disk_secrets(xmlDocPtr doc, struct vm_strv *paths, struct vm_strv *uuids);
/* Every secret a definition (XML text) or a domain names, ensured on conn; made
 * (may be NULL) gets those it defined. */
int vm_domain_secrets_ensure(virConnectPtr conn, const char *vm, const char *xml, struct vm_strv *made);
int vm_dom_secrets_ensure(virConnectPtr conn, virDomainPtr dom);
/* <encryption format='luks'><secret type='passphrase' uuid=/></encryption> under parent. */
void vm_xml_add_luks(xmlNodePtr parent, const char *uuid);

/* ---- The journal (journal.c) --------------------------------------------------------------
 * A run that makes or removes several things on a VM first writes what it is about
 * to do into the VM's definition (a metadata element in VM_JOURNAL_NS), so that the
 * next run that holds the VM's lock finishes or rolls back what a killed run
 * started, the way git recovers. The record is an element <journal op= tool= pid=
 * host= started=> whose children are the operation's own. */
#define VM_JOURNAL_NS "https://vmkit.dev/xmlns/journal/1"
#define VM_JOURNAL_PREFIX "vmkitjournal"
/* A new record for op by this run. */
xmlDocPtr vm_journal_new(const char *op);
/* Adds <volume path= role=/> (role: what the op does with it). */
void vm_journal_add_volume(xmlDocPtr rec, const char *path, const char *role);
/* Adds <secret uuid= role=/>: a disk key the op makes (new) or removes (remove);
 * a roll-back or finish removes it from the host and its key from this machine. */
void vm_journal_add_secret(xmlDocPtr rec, const char *uuid, const char *role);
int vm_journal_write(virDomainPtr dom, xmlDocPtr rec);
/* 0 with *rec NULL when there is none. */
int vm_journal_read(virDomainPtr dom, xmlDocPtr *rec);
int vm_journal_clear(virDomainPtr dom);
/* The op, tool and pid of a record (pointers into it; free with xmlFree). */
char *vm_journal_attr(xmlDocPtr rec, const char *name);
/* The volumes of a record with a role, in order. */
void vm_journal_volumes(xmlDocPtr rec, const char *role, struct vm_strv *out);
/* Finishes or rolls back a record that vmkit's shared code knows (create,
 * undefine): 0 when there was none or it is done; VM_EXIT_NOTFOUND when the VM is
 * gone with it (a rolled-back create); 1 after a message. Records of other ops are
 * left to their tools: *other is set to the op when there is one. */
int vm_journal_recover(virConnectPtr conn, virDomainPtr *dom, char **other);
/* The tool whose next run finishes a record of op ("vmbackup" for a backup,
 * else "vmsnap"), for messages. */
const char *vm_journal_op_tool(const char *op);

/* ---- A domain job's statistics (job.c) ------------------------------------------------
 * What a migration or a backup job has done, from virDomainGetJobStats (completed:
 * the last finished job's, as libvirt keeps them, also on a migration's
 * destination). Rates in bytes per second, sizes in bytes. */
struct vm_jobstats {
  int type, operation; /* VIR_DOMAIN_JOB_*, VIR_DOMAIN_JOB_OPERATION_* */
  uint64_t elapsed_ms, setup_ms, downtime_ms;
  bool has_downtime;
  uint64_t data_total, data_processed, data_remaining;
  uint64_t mem_total, mem_processed, mem_remaining, mem_bps, page_size;
  uint64_t dirty_rate; /* pages per second, as libvirt gives it */
  uint64_t iteration, postcopy_requests;
  uint64_t disk_total, disk_processed, disk_remaining, disk_bps;
  int throttle_pct;
};
/* 0, or -1 with libvirt's error left for vm_fail_virt. */
int vm_job_stats(virDomainPtr dom, bool completed, struct vm_jobstats *s);
/* The same from typed parameters already in hand (a job-completed event's). */
void vm_job_stats_parse(int type, virTypedParameterPtr p, int n, struct vm_jobstats *s);


/* ---- Counters of a host and its VMs (stats.c) ------------------------------------------
 * Samples for rates: two samples an interval apart give CPU %, bytes/s. Nothing
 * here prints: a failure returns an exit code (vmkit(7)) with *why, libvirt's
 * message on one line (caller frees), so that many hosts can be sampled at once,
 * one thread each. */
struct vm_dom_sample {
  char *name;
  char uuid[VIR_UUID_STRING_BUFLEN];
  int id; /* changes when the VM restarts (its counters start again) */
  int state;
  bool persistent;
  unsigned vcpus;
  unsigned long long cpu_ns, mem_kib, max_kib, rss_kib, rd, wr, rx, tx;
  long long dirty_mibs; /* the last dirty rate libvirt measured, MiB/s; -1: none */
};
/* The VMs of conn (only: NULL, or a NULL-terminated list of some), sorted by name.
 * how: VM_SAMPLE_DIRTY adds the dirty rate libvirt last measured; VM_SAMPLE_NOWAIT
 * skips what a busy QEMU cannot say at once. */
enum { VM_SAMPLE_DIRTY = 1, VM_SAMPLE_NOWAIT = 2 };
int vm_dom_samples(virConnectPtr conn, virDomainPtr *only, unsigned how, struct vm_dom_sample **out, size_t *n,
                   char **why);
void vm_dom_samples_free(struct vm_dom_sample *s, size_t n);
const struct vm_dom_sample *vm_dom_sample_find(const struct vm_dom_sample *s, size_t n, const char *name);
struct vm_node_sample {
  unsigned cpus;
  unsigned long long cpu_busy_ns, cpu_idle_ns; /* all CPUs; idle counts I/O wait */
  unsigned long long mem_total_kib, mem_used_kib; /* used: not free, buffers or cache */
};
int vm_node_sample(virConnectPtr conn, struct vm_node_sample *s, char **why);
/* (b - a) / secs, 0 when the counter went back (a VM restarted). */
double vm_rate(unsigned long long a, unsigned long long b, double secs);

/* ---- Templates, read (template.c) ------------------------------------------------------
 * A template lives in a storage pool of each host (vm_default_template_pool()) as
 * volumes named after it: NAME.qcow2 (read-only), NAME.template (its record, JSON),
 * NAME.vmlinuz and NAME.initrd. vmrun makes and clones them; vmpatch reads their
 * disks. Paths are the host's. */
struct vm_template {
  char *name, *pool, *id, *state;
  char *disk, *kernel, *initrd, *cmdline;
  unsigned vcpus;
  uint64_t memory, virtual_size;
  json_object *json;
};
/* Loads a template from pool (NULL: the default template pool). 0; 3 when there is
 * none; 4 when it is incomplete, unless allow_incomplete. Each after a message. */
int vm_template_load(virConnectPtr conn, const char *pool, const char *name, bool allow_incomplete,
                     struct vm_template *t);
void vm_template_free(struct vm_template *t);
/* Finds (create: defines when missing and a default) and starts the template pool:
 * 0; VM_EXIT_NOTFOUND quietly when there is none (and not create). */
int vm_template_open_pool(virConnectPtr conn, const char *pool_name, bool create, virStoragePoolPtr *pool);
/* The record NAME.template of pool, parsed (an empty object when it does not
 * parse: a torn, incomplete record); NULL when there is none. Caller puts it. */
json_object *vm_template_read_record(virStoragePoolPtr pool, const char *name);
/* The template a record describes: only its own volume names are looked up. */
int vm_template_from_record(virStoragePoolPtr pool, const char *name, json_object *j, struct vm_template *t);
bool vm_template_complete(const struct vm_template *t);
/* A path to a copy of the template's disk that this machine can read, for
 * libguestfs: the template itself on a local connection, else the local libvirt's
 * copy with the same id (VMKIT_LOCAL_URI, else qemu:///system), whose shared
 * lock on this machine is then held until the process ends. NULL, quietly,
 * when there is none: the caller says what that stops. Caller frees. */
char *vm_template_local_disk(virConnectPtr conn, const struct vm_template *t);

/* ---- Templates, made (template.c) ----------------------------------------------------
 * What vmrun template create and push, and vmpatch apply --template, share: a
 * template is made under its lock, its record written first as incomplete (naming
 * every volume the run may make) and marked complete last, so that a run killed at
 * any instant leaves an incomplete record, which the next run on that name removes
 * with the volumes of the template's own names. */
#define VM_TEMPLATE_FORMAT 2
/* "NAME.SUFFIX", the name of a template's volume. Caller frees. */
char *vm_template_vol_name(const char *name, const char *suffix);
/* Removes NAME.qcow2, NAME.vmlinuz and NAME.initrd, then the record: only names of
 * the template's own, whatever the record says. 0 or an exit code after a message. */
int vm_template_remove(virStoragePoolPtr pool, const char *name);
/* 0 when none of the template's volume names is taken (so that removing an
 * incomplete template never removes what another made); else 4 after a message. */
int vm_template_names_free(virConnectPtr conn, virStoragePoolPtr pool, const char *name);
/* A record being built (state "incomplete", the run that makes it, the volumes it
 * names), and writing one. Caller puts the record. */
json_object *vm_template_new_record(const char *name, const char *id, bool kernel, bool initrd);
int vm_template_write_record(virStorageVolPtr rec, json_object *j);
/* The template's lock on this machine (held until the process ends). */
int vm_template_lock(virConnectPtr conn, const char *pool_name, const char *name, bool shared);
/* Takes the lock, then deals with what an earlier, killed run left: an incomplete
 * record (not shared) is removed with the volumes it names. 0 with *existing set
 * (caller puts) when a complete template is there, 0 with NULL when the name is
 * free, or an exit code after a message. */
int vm_template_claim(virConnectPtr conn, virStoragePoolPtr pool, const char *name, bool shared,
                      json_object **existing);
/* A new empty volume of a template, registered for undo. */
int vm_template_new_volume(virConnectPtr conn, virStoragePoolPtr pool, struct vm_undo *u, const char *name,
                           const char *format, uint64_t capacity, unsigned mode, virStorageVolPtr *vol);
/* A copy of a file (kernel, initrd; a volume, or a local file on a local
 * connection) into the template as volume as (0444), registered for undo. */
int vm_template_copy_boot_file(virConnectPtr conn, virStoragePoolPtr pool, struct vm_undo *u, const char *src,
                               const char *as);
/* What vm_template_make hands its fill callback. */
struct vm_template_build {
  virConnectPtr conn;
  virStoragePoolPtr pool;
  struct vm_undo *undo;    /* every volume fill makes goes on it (vm_template_new_volume ...) */
  const char *scratch;     /* a local folder of the run's, removed at its end */
  const char *name;        /* the template being made */
  const char *vdisk;       /* the volume names fill makes: NAME.qcow2 (the sealed disk), */
  const char *vkernel;     /* NAME.vmlinuz, NAME.initrd (NULL when the record names none) */
  const char *vinitrd;
  json_object *fields;     /* fill adds what the record keeps (source, vcpus, memory ...) */
  const char *cmdline;     /* fill sets it when the template boots a kernel with one */
};
/* Makes template name in pool (NULL: the default template pool, made when
 * missing) on conn: its lock; 4 when it exists; the record first, as incomplete
 * (naming NAME.vmlinuz and NAME.initrd when kernel, initrd); then fill makes the
 * volumes, sealed; the record is then marked complete with fill's fields, the
 * disk's virtual size and the volume names. When fill fails, or returns VM_DONE
 * (nothing to keep), what the run made is removed and that is returned. */
int vm_template_make(virConnectPtr conn, const char *pool_name, const char *name, bool kernel, bool initrd,
                     int (*fill)(struct vm_template_build *b, void *arg), void *arg);

#endif
