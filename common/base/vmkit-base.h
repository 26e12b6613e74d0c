/* libvmkit-base: the layer of the shared library that needs no libvirt, no libxml2
 * and no libguestfs (messages, exit codes, options, output, sizes, running programs,
 * durable files, locks, the hosts file), so that a small static-friendly program
 * such as p2v-agent can link it alone. It needs libc, popt and json-c. Everything
 * it exports starts with vm_ or VM_. */
#ifndef VMKIT_BASE_H
#define VMKIT_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <json-c/json.h>
#include <popt.h>

#include "cleanup.h"

#define VM_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- Exit codes: the same in every tool, listed in vmkit(7) ---------------------- */
enum {
  VM_EXIT_OK = 0,
  VM_EXIT_FAIL = 1,     /* the operation failed, or was interrupted */
  VM_EXIT_USAGE = 2,    /* bad option, argument, size or count */
  VM_EXIT_NOTFOUND = 3, /* no such VM, snapshot, image, template, file */
  VM_EXIT_STATE = 4,    /* wrong state or conflict (exists, running, in use, locked) */
  VM_EXIT_TIMEOUT = 5,  /* a wait ran out of time */
  VM_EXIT_VERIFY = 6,   /* a check found something wrong */
};
/* Returned by vm_parse() when --help or --version was handled: exit 0. */
#define VM_DONE (-1)

/* ---- Messages (error.c) -------------------------------------------------------------
 * Every error is one line on stderr: "tool: what failed: why". The vm_fail family
 * prints it and returns the exit code so that callers can write
 *   return vm_fail(VM_EXIT_NOTFOUND, "no such VM '%s'", name);
 * Chatter (vm_info) goes to stderr too and is silenced by -q; vm_debug needs -v.
 * The layers above add their own (vm_fail_virt, vm_fail_gfs). */
extern const char *vm_progname;
void vm_init(const char *progname);
int vm_fail(int code, const char *fmt, ...) VM_PRINTF(2, 3);
int vm_fail_errno(int code, const char *fmt, ...) VM_PRINTF(2, 3);
/* One message line with a reason appended ("...: why"), for the layers above. */
int vm_fail_why(int code, const char *why, const char *fmt, va_list ap) VM_PRINTF(3, 0);
/* The text of the last error this thread printed (without the program's name),
 * "" if none. */
const char *vm_last_error(void);
/* Mutes error lines (on this thread) while on: they are only kept for
 * vm_last_error(), for code that gathers failures and reports them itself (a
 * pre-flight check list). Warnings and chatter are not muted. Calls nest: each
 * vm_errors_mute(true) is undone by one vm_errors_mute(false). */
void vm_errors_mute(bool on);
void vm_warn(const char *fmt, ...) VM_PRINTF(1, 2);
void vm_info(const char *fmt, ...) VM_PRINTF(1, 2);
void vm_debug(const char *fmt, ...) VM_PRINTF(1, 2);

/* Ctrl-C, SIGTERM, SIGHUP and SIGALRM (a deadline set with alarm(2)) set a flag instead of killing the tool, so that long
 * work can stop at a safe point and undo what it made; a child program that runs
 * (vm_run) gets the same signal. SIGPIPE is ignored: a write to a closed pipe
 * fails with EPIPE instead. */
void vm_catch_signals(void);
bool vm_interrupted(void);
/* The signal that interrupted the tool (0 when none). */
int vm_interrupt_signal(void);
/* The usual failure for an interrupted tool: "interrupted by SIGTERM", exit 1. */
int vm_fail_interrupted(void);

/* ---- Options (options.c) ------------------------------------------------------------ */
enum vm_format { VM_FMT_TABLE, VM_FMT_TSV, VM_FMT_JSON, VM_FMT_PROM };
struct vm_options {
  char *uri;        /* -c, --connect: a URI or a host of the hosts file; NULL: default */
  char *hosts_file; /* -H, --hosts; NULL: VMKIT_HOSTS, else /etc/vmkit/hosts */
  char *virt_type;  /* --virt-type; resolved by vm_virt_type() */
  char *output;     /* -o table|tsv|json */
  enum vm_format format;
  int quiet, verbose, help, version, use_syslog;
  char *lock_wait;  /* --lock-wait SECONDS, for verbs that change a VM */
};
extern struct vm_options vm_opts;
extern struct poptOption vm_common_table[];
#define VM_POPT_COMMON \
  { NULL, '\0', POPT_ARG_INCLUDE_TABLE, vm_common_table, 0, "Common options:", NULL }
/* The common options of a tool that never speaks to libvirt: no -c, -H, --virt-type. */
extern struct poptOption vm_local_table[];
#define VM_POPT_LOCAL \
  { NULL, '\0', POPT_ARG_INCLUDE_TABLE, vm_local_table, 0, "Common options:", NULL }
/* --lock-wait, in the tables of the verbs that change a VM. */
extern struct poptOption vm_lock_table[];
#define VM_POPT_LOCK { NULL, '\0', POPT_ARG_INCLUDE_TABLE, vm_lock_table, 0, NULL, NULL }
/* --lock-wait in seconds (0 when not given). */
int vm_lock_wait_seconds(void);

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
/* The same with VM_POPT_LOCAL's options before the command. */
int vm_dispatch_local(int argc, char **argv, const struct vm_verb *verbs, const char *about);

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
/* Sleeps, but returns early when the tool is interrupted. */
void vm_sleep_ms(int ms);

/* ---- Strings and argv ----------------------------------------------------------------- */
struct vm_strv {
  char **v;   /* NULL-terminated */
  size_t n, cap;
};
void vm_strv_add(struct vm_strv *a, const char *s);
/* A UUID written 8-4-4-4-12 in hex, into out in lowercase; -1 when s is not one. */
int vm_uuid_canonical(const char *s, char out[37]);
void vm_strv_addf(struct vm_strv *a, const char *fmt, ...) VM_PRINTF(2, 3);
void vm_strv_free(struct vm_strv *a);
bool vm_strv_contains(char *const *v, const char *s);
/* Removes one string equal to s (the order of the others may change); whether there was one. */
bool vm_strv_remove_one(struct vm_strv *a, const char *s);
/* The strings as lines, each ending in a newline ("" for none); *len (may be
 * NULL) its length. Caller frees. */
char *vm_strv_lines(const struct vm_strv *a, size_t *len);
/* "'a', 'b' and 'c'" for messages. Caller frees. */
char *vm_strv_join_quoted(char *const *v);
/* Quotes a word for display as shell input (dry runs, verbose logs, errors). */
char *vm_shell_quote(const char *s);
char *vm_argv_str(char *const argv[]);
char *vm_strdup_printf(const char *fmt, ...) VM_PRINTF(1, 2);
char *vm_strdup(const char *s); /* exits on out of memory, like the rest */
/* Reads a whole small file (a key, a password); NULL with errno set on failure. */
char *vm_read_file(const char *path, size_t max, size_t *len);
/* Reads an open file, pipe or socket to its end (standard input for "-"), like
 * vm_read_file: NUL-terminated, *len (may be NULL) its length; NULL with errno
 * set on failure, EFBIG past max bytes. Leaves fd open. Caller frees. */
char *vm_read_fd(int fd, size_t max, size_t *len);
/* The first line of a file, without its newline (secrets: never on argv). */
char *vm_read_first_line(const char *path);
/* Writes a file whole and durably: to a unique temporary file beside it, fsync,
 * rename over PATH, fsync the directory. Never touches another writer's temporary
 * file. 0 or -1 with errno. */
int vm_write_file_atomic(const char *path, const char *data, size_t len, unsigned mode);
/* Flushes a folder (after a name in it was made, renamed or removed). 0 or -1. */
int vm_fsync_dir(const char *dir);
/* Removes a local directory tree (a run's own scratch folders only). */
int vm_remove_tree(const char *path);
/* A run's private scratch folder, ${TMPDIR:-/var/tmp}/vmkit-WHAT.PID.XXXXXX (0700);
 * the folders of runs that died are removed first. Caller frees; NULL after a
 * message. */
char *vm_scratch_dir(const char *what);
/* "2026-11-21T23:37:56Z" for now. */
void vm_iso_time(char buf[static 32]);
/* This machine's identity (/etc/machine-id, else its host name): records of runs
 * say where they ran, since a lock covers only the runs of one machine. */
const char *vm_machine_id(void);
/* A random UUID string (36 characters and a NUL). */
void vm_uuid_random(char buf[static 37]);
/* Text from elsewhere (a guest, a file) made fit for one line of a terminal:
 * control characters (C0, DEL, and C1 as UTF-8) become spaces. */
void vm_sanitize(char *s);
/* Cuts s to at most max bytes, never inside a UTF-8 character. */
void vm_cut_utf8(char *s, size_t max);

/* ---- Running programs (run.c) ----------------------------------------------------------
 * Programs get an argv, never a shell string. stdout and stderr are captured when
 * out/err are not NULL; otherwise stdout goes to /dev/null and stderr is kept for
 * the error message. The child gets SIGTERM when the tool dies (however it dies),
 * and the signal that interrupts the tool. Returns the exit status, or -1 when it
 * could not run or was killed by a signal. */
int vm_run(char *const argv[], char **out, char **err);
/* Child programs (vm_run) that a signal interrupting the tool is passed on to,
 * at once: one per thread that runs one. */
#define VM_CHILD_SLOTS 32
/* Runs argv; on failure prints "tool: PROGRAM failed: LAST LINE OF STDERR" and
 * returns VM_EXIT_FAIL. With -v the command line is shown first. */
int vm_run_checked(char *const argv[], char **out);
/* The last non-empty line of a program's stderr (s, its trailing newlines cut),
 * which is where qemu-img and friends say why they failed. */
const char *vm_last_line(char *s);
/* Another vmkit tool: beside this one (installed), in its folder of the build
 * tree, else its bare name for PATH. Caller frees. */
char *vm_tool_path(const char *tool);

/* ---- Sizes (size.c) --------------------------------------------------------------------
 * "4G", "512M", "1.5T", "100K", "4096B", "2GiB": binary units. A bare number is in
 * default_unit ('B', 'K', 'M', 'G', 'T'). Computed in integers: a size that is not
 * a whole number of bytes, or does not fit in 64 bits, is refused. Returns 0, or
 * -1 when s is not a size. */
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
 * numbers, for pipelines, with tab, newline, carriage return and backslash escaped
 * as \t \n \r \\; json prints the objects themselves. A reader that closes the pipe
 * early is normal: the write fails quietly and vm_output_closed() turns true, so
 * that a loop stops; the tool then exits with the code it has. */
enum vm_col_kind { VM_COL_STR, VM_COL_INT, VM_COL_BYTES, VM_COL_RATE, VM_COL_PCT, VM_COL_BOOL };
struct vm_column {
  const char *key;
  const char *header; /* NULL: -o prom only (a label, say), not in table or tsv */
  enum vm_col_kind kind;
  /* -o prom (verbs that allow it): a numeric or boolean column's metric name
   * ("vmkit_vm_cpu_percent"), a string column's label name ("vm"); NULL: left out. */
  const char *prom;
};
/* A verb whose results are metrics sets this before vm_parse(): -o prom is then
 * accepted, the Prometheus text format (for node_exporter's textfile collector). */
extern bool vm_output_prom_ok;
/* A list of flat objects, one row each. Returns 0 or VM_EXIT_FAIL on write error. */
int vm_print_list(json_object *rows, const struct vm_column *cols);
/* The Prometheus text format of rows: per column with a metric name, a TYPE line
 * and one sample per row that has the key, labelled by the label columns. */
int vm_print_prom(json_object *rows, const struct vm_column *cols);
/* One object: table prints "key: value" lines (nested lists indented), tsv prints
 * "key<TAB>value" lines, json the object. cols give kinds for human units. */
int vm_print_record(json_object *obj, const struct vm_column *cols);
bool vm_output_closed(void);
/* A string for a tsv field: tabs, newlines and backslashes escaped. Caller frees. */
char *vm_tsv_escape(const char *s);
/* Progress of long work on stderr, only when it is a terminal and not -q. */
void vm_progress(const char *what, uint64_t done, uint64_t total);
void vm_progress_end(void);

/* ---- Locks (lock.c) -----------------------------------------------------------------------
 * A lock is a file in the lock directory (VMKIT_LOCK_DIR, else /run/vmkit/locks), named
 * by its key, locked with fcntl(2): held by this process until it ends or releases
 * it, and released by the kernel when the process dies, however it dies. Shared
 * locks exclude exclusive ones only. A lock that is held elsewhere is waited for up
 * to wait_s seconds; then VM_EXIT_STATE after "WHAT is busy: TOOL VERB (pid N)
 * holds its lock". */
struct vm_lock;
int vm_lock_take(const char *key, bool shared, int wait_s, const char *what, struct vm_lock **out);
void vm_lock_release(struct vm_lock *l);
/* The PID of a process that holds the lock, 0 when none does, -1 on error. */
pid_t vm_lock_holder(const char *key);

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
/* The hosts file in force: -H, else VMKIT_HOSTS, else /etc/vmkit/hosts. */
const char *vm_hosts_path(void);
/* path NULL: vm_hosts_path(). Returns 0 or an exit code after a message. */
int vm_hosts_load(const char *path, struct vm_hosts *hosts);
/* Parses text; on error returns -1 and sets *line to the bad line number. */
int vm_hosts_parse(const char *text, struct vm_hosts *hosts, int *line);
const struct vm_host *vm_hosts_find(const struct vm_hosts *hosts, const char *name);
void vm_hosts_free(struct vm_hosts *hosts);
/* The host whose URI is uri, or NULL. */
const struct vm_host *vm_hosts_find_uri(const struct vm_hosts *hosts, const char *uri);
/* The value of a "KEY=VALUE" tag of a host ("migrate-uri", "memory"), or NULL. */
const char *vm_host_tag(const struct vm_host *h, const char *key);
/* A URI for what the user typed where a URI goes: a URI (it has "://" or ":/") is
 * itself; a bare word is a host of the hosts file. NULL stays NULL. Returns 0 and
 * sets *uri (caller frees), or an exit code after a message (3: no such host). */
int vm_resolve_uri(const char *name_or_uri, char **uri);

/* ---- Migration plans (plan.c, vmkit-plan(5)) ---------------------------------------------
 * Lines "VM SOURCE DEST"; '#' starts a comment; an optional first line
 * "#!vmkit-plan 1" names the format's version. */
#define VM_PLAN_MAX 100000
struct vm_plan_move {
  char *vm, *src, *dst;
  int line;
};
struct vm_plan {
  struct vm_plan_move *v;
  size_t n;
};
/* 0, or -1 with *line the bad line's number and *why what is wrong with it. */
int vm_plan_parse(const char *text, size_t len, struct vm_plan *plan, int *line, const char **why);
void vm_plan_free(struct vm_plan *plan);

/* ---- A work queue (workq.c) -----------------------------------------------------------
 * A small pool of worker threads with a bounded queue: vmbackup's chunks and
 * p2v-agent's blocks are hashed and compressed on every core while one thread
 * reads or writes. */
struct vm_workq;
/* nthreads workers (0: one per core, at most 8); at most depth items wait. */
struct vm_workq *vm_workq_new(int nthreads, size_t depth);
/* Queues fn(arg), waiting while the queue is full. */
void vm_workq_push(struct vm_workq *q, void (*fn)(void *), void *arg);
/* Waits until every queued item has run. */
void vm_workq_drain(struct vm_workq *q);
/* Drains, stops the threads, frees. */
void vm_workq_free(struct vm_workq *q);
int vm_workq_threads(const struct vm_workq *q);

#endif
