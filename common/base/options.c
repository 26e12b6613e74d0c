/* The shared popt table and the parse/dispatch helpers every tool's main() uses:
 * parse, validate, connect, act, exit. */
#include <stdarg.h>
#include <string.h>

#include "vmkit-base.h"

struct vm_options vm_opts;

/* For a tool that never speaks to libvirt (p2v-agent): the common options
 * without -c, -H and --virt-type. */
struct poptOption vm_local_table[] = {
  { "output", 'o', POPT_ARG_STRING, &vm_opts.output, 0,
    "output format: table, tsv or json", "FORMAT" },
  { "quiet", 'q', POPT_ARG_NONE, &vm_opts.quiet, 0, "print only results and errors", NULL },
  { "verbose", 'v', POPT_ARG_NONE, &vm_opts.verbose, 0, "explain what is being done", NULL },
  { "syslog", '\0', POPT_ARG_NONE, &vm_opts.use_syslog, 0, "also send messages to syslog", NULL },
  { "version", 'V', POPT_ARG_NONE, &vm_opts.version, 0, "print the version and exit", NULL },
  { "help", 'h', POPT_ARG_NONE, &vm_opts.help, 0, "show this help and exit", NULL },
  POPT_TABLEEND
};

struct poptOption vm_common_table[] = {
  { "connect", 'c', POPT_ARG_STRING, &vm_opts.uri, 0,
    "libvirt connection URI, or a host of the hosts file (default: $LIBVIRT_DEFAULT_URI)", "URI" },
  { "hosts", 'H', POPT_ARG_STRING, &vm_opts.hosts_file, 0,
    "the pool's hosts file (default: $VMKIT_HOSTS, else /etc/vmkit/hosts)", "FILE" },
  { "virt-type", '\0', POPT_ARG_STRING, &vm_opts.virt_type, 0,
    "kvm or qemu (default: $VMKIT_VIRT_TYPE, else kvm when /dev/kvm works)", "TYPE" },
  { NULL, '\0', POPT_ARG_INCLUDE_TABLE, vm_local_table, 0, NULL, NULL },
  POPT_TABLEEND
};

struct poptOption vm_lock_table[] = {
  { "lock-wait", '\0', POPT_ARG_STRING, &vm_opts.lock_wait, 0,
    "wait up to SECONDS for another run to release the VM (default: 0; then exit 4)", "SECONDS" },
  POPT_TABLEEND
};

int vm_lock_wait_seconds(void)
{
  uint64_t v = 0;
  if (vm_opts.lock_wait) vm_parse_uint(vm_opts.lock_wait, 0, 86400, &v);
  return (int)v;
}

/* The command a usage error points at: "vmrun" or "vmrun stop". */
static const char *usage_cmd = "vmkit";

int vm_usage_error(const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s\nTry '%s --help' for more information.\n", vm_progname, msg,
          usage_cmd);
  return VM_EXIT_USAGE;
}

static void print_version(void) { printf("%s (vmkit) %s\n", vm_progname, VMKIT_VERSION); }

/* Checks the common options once they are all parsed. */
static int finish_common(void)
{
  if (vm_opts.output) {
    if (strcmp(vm_opts.output, "table") == 0) vm_opts.format = VM_FMT_TABLE;
    else if (strcmp(vm_opts.output, "tsv") == 0) vm_opts.format = VM_FMT_TSV;
    else if (strcmp(vm_opts.output, "json") == 0) vm_opts.format = VM_FMT_JSON;
    else if (strcmp(vm_opts.output, "prom") == 0 && vm_output_prom_ok) vm_opts.format = VM_FMT_PROM;
    else return vm_usage_error("unknown output format '%s': use table, tsv%s or json", vm_opts.output,
                               vm_output_prom_ok ? ", prom" : "");
  }
  uint64_t w;
  if (vm_opts.lock_wait && vm_parse_uint(vm_opts.lock_wait, 0, 86400, &w) < 0)
    return vm_usage_error("invalid --lock-wait '%s': expected 0 to 86400 seconds", vm_opts.lock_wait);
  const char *vt = vm_opts.virt_type ? vm_opts.virt_type : getenv("VMKIT_VIRT_TYPE");
  if (vt && *vt && strcmp(vt, "kvm") != 0 && strcmp(vt, "qemu") != 0)
    return vm_usage_error("unknown virt type '%s': use kvm or qemu", vt);
  return 0;
}

/* popt prints its own "Usage:" line first; vmkit's help puts the synopsis and a
 * sentence about the command there instead, then popt's option list. */
static void print_options(poptContext ctx)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  poptPrintHelp(ctx, m, 0);
  fclose(m);
  /* Everything after popt's own usage line, one blank line before the first group. */
  const char *rest = buf ? strchr(buf, '\n') : NULL;
  while (rest && rest[0] == '\n' && rest[1] == '\n') rest++;
  if (rest) fputs(rest, stdout);
  free(buf);
}

static void print_help(poptContext ctx, const char *args_help, const char *about)
{
  printf("Usage: %s [OPTIONS]%s%s\n", usage_cmd, args_help && *args_help ? " " : "",
         args_help ? args_help : "");
  if (about) printf("%s\n", about);
  print_options(ctx);
}

int vm_parse(poptContext *ctxp, int argc, char **argv, const struct poptOption *table,
             const char *args_help, const char *about, int min, int max,
             const char ***args, int *nargs)
{
  usage_cmd = argv[0];
  poptContext ctx = poptGetContext(NULL, argc, (const char **)argv, table, 0);
  *ctxp = ctx;
  int rc;
  while ((rc = poptGetNextOpt(ctx)) > 0)
    ;
  if (rc < -1)
    return vm_usage_error("%s: %s", poptBadOption(ctx, POPT_BADOPTION_NOALIAS),
                          poptStrerror(rc));
  if (vm_opts.help) {
    print_help(ctx, args_help, about);
    return VM_DONE;
  }
  if (vm_opts.version) {
    print_version();
    return VM_DONE;
  }
  if ((rc = finish_common()) != 0) return rc;
  const char **a = poptGetArgs(ctx);
  int n = 0;
  while (a && a[n]) n++;
  if (n < min) return vm_usage_error("missing argument: %s", args_help);
  if (max >= 0 && n > max) return vm_usage_error("unexpected argument '%s'", a[max]);
  static const char *none[] = { NULL };
  *args = a ? a : none;
  *nargs = n;
  return 0;
}

static void print_tool_help(poptContext ctx, const struct vm_verb *verbs, const char *about)
{
  printf("Usage: %s [OPTIONS] COMMAND [ARGS...]\n%s\n\nCommands:\n", usage_cmd, about);
  for (const struct vm_verb *v = verbs; v->name; v++)
    printf("  %-12s %s\n", v->name, v->summary);
  print_options(ctx);
  printf("\nRun '%s COMMAND --help' for the options of a command.\n", usage_cmd);
}

static int dispatch(int argc, char **argv, const struct vm_verb *verbs, const char *about, struct poptOption *common)
{
  /* The tool itself is named by its program name, not the path it was run by;
   * a nested dispatch (vmrun template) is named by its "tool verb" argv[0]. */
  const char *tool = strchr(argv[0], ' ') ? argv[0] : vm_progname;
  usage_cmd = tool;
  struct poptOption table[] = { { NULL, '\0', POPT_ARG_INCLUDE_TABLE, common, 0, "Common options:", NULL },
                                POPT_TABLEEND };
  /* Options before the command are the common ones; everything from the command
   * on is the command's to parse. */
  CLEANUP_POPT poptContext ctx =
    poptGetContext(NULL, argc, (const char **)argv, table, POPT_CONTEXT_POSIXMEHARDER);
  int rc;
  while ((rc = poptGetNextOpt(ctx)) > 0)
    ;
  if (rc < -1)
    return vm_usage_error("%s: %s", poptBadOption(ctx, POPT_BADOPTION_NOALIAS),
                          poptStrerror(rc));
  const char **rest = poptGetArgs(ctx);
  if (vm_opts.help && !rest) {
    print_tool_help(ctx, verbs, about);
    return VM_EXIT_OK;
  }
  if (vm_opts.version && !rest) {
    print_version();
    return VM_EXIT_OK;
  }
  if (!rest || !rest[0]) return vm_usage_error("missing command");
  const struct vm_verb *v = verbs;
  while (v->name && strcmp(v->name, rest[0]) != 0) v++;
  if (!v->name) return vm_usage_error("unknown command '%s'", rest[0]);

  int n = 0;
  while (rest[n]) n++;
  char **vargv = calloc((size_t)n + 1, sizeof *vargv);
  CLEANUP_FREE char *cmd = vm_strdup_printf("%s %s", tool, v->name);
  vargv[0] = cmd;
  for (int i = 1; i < n; i++) vargv[i] = (char *)rest[i];
  rc = v->run(n, vargv);
  free(vargv);
  return rc;
}

int vm_dispatch(int argc, char **argv, const struct vm_verb *verbs, const char *about)
{
  return dispatch(argc, argv, verbs, about, vm_common_table);
}

int vm_dispatch_local(int argc, char **argv, const struct vm_verb *verbs, const char *about)
{
  return dispatch(argc, argv, verbs, about, vm_local_table);
}
