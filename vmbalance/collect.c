/* vmbalance collect: how busy each host and VM of the pool is, as rates over an
 * interval, for people (table), pipelines (tsv), programs (json) and Prometheus
 * (prom); --alert turns it into a check for cron and monitoring. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "vmbalance.h"
#include "vmkit-virt.h"

static int o_interval = 1, o_timeout = 10;
static char **o_alerts;

static const struct vm_column cols[] = {
  { "host", "HOST", VM_COL_STR, "host" },
  { "vm", "VM", VM_COL_STR, "vm" },
  { "state", "STATE", VM_COL_STR, NULL },
  { "up", "UP", VM_COL_BOOL, NULL },
  { "cpus", "CPUS", VM_COL_INT, NULL },
  { "cpu_percent", "CPU%", VM_COL_PCT, NULL },
  { "memory", "MEMORY", VM_COL_BYTES, NULL },
  { "memory_used", "USED", VM_COL_BYTES, NULL },
  { "memory_percent", "MEM%", VM_COL_PCT, NULL },
  { "disk_read", "DISK-RD", VM_COL_RATE, NULL },
  { "disk_write", "DISK-WR", VM_COL_RATE, NULL },
  { "net_rx", "NET-RX", VM_COL_RATE, NULL },
  { "net_tx", "NET-TX", VM_COL_RATE, NULL },
  { "error", "ERROR", VM_COL_STR, NULL },
  { NULL, NULL, 0, NULL },
};

/* Prometheus: the hosts' gauges and the VMs', each labelled by its own rows. */
static const struct vm_column host_prom[] = {
  { "host", NULL, VM_COL_STR, "host" },
  { "up", NULL, VM_COL_BOOL, "vmkit_host_up" },
  { "cpus", NULL, VM_COL_INT, "vmkit_host_cpus" },
  { "cpu_percent", NULL, VM_COL_PCT, "vmkit_host_cpu_percent" },
  { "memory", NULL, VM_COL_BYTES, "vmkit_host_memory_bytes" },
  { "memory_used", NULL, VM_COL_BYTES, "vmkit_host_memory_used_bytes" },
  { "memory_percent", NULL, VM_COL_PCT, "vmkit_host_memory_percent" },
  { "vms", NULL, VM_COL_INT, "vmkit_host_vms" },
  { "disk_read", NULL, VM_COL_RATE, "vmkit_host_disk_read_bytes_per_second" },
  { "disk_write", NULL, VM_COL_RATE, "vmkit_host_disk_write_bytes_per_second" },
  { "net_rx", NULL, VM_COL_RATE, "vmkit_host_net_rx_bytes_per_second" },
  { "net_tx", NULL, VM_COL_RATE, "vmkit_host_net_tx_bytes_per_second" },
  { NULL, NULL, 0, NULL },
};
static const struct vm_column vm_prom[] = {
  { "host", NULL, VM_COL_STR, "host" },
  { "vm", NULL, VM_COL_STR, "vm" },
  { "vcpus", NULL, VM_COL_INT, "vmkit_vm_vcpus" },
  { "cpu_percent", NULL, VM_COL_PCT, "vmkit_vm_cpu_percent" },
  { "memory", NULL, VM_COL_BYTES, "vmkit_vm_memory_bytes" },
  { "memory_used", NULL, VM_COL_BYTES, "vmkit_vm_rss_bytes" },
  { "disk_read", NULL, VM_COL_RATE, "vmkit_vm_disk_read_bytes_per_second" },
  { "disk_write", NULL, VM_COL_RATE, "vmkit_vm_disk_write_bytes_per_second" },
  { "net_rx", NULL, VM_COL_RATE, "vmkit_vm_net_rx_bytes_per_second" },
  { "net_tx", NULL, VM_COL_RATE, "vmkit_vm_net_tx_bytes_per_second" },
  { NULL, NULL, 0, NULL },
};

static void add_num(json_object *o, const char *k, double v)
{
  json_object_object_add(o, k, json_object_new_int64((int64_t)llround(v)));
}

static json_object *host_row(const struct pool_host *ph)
{
  json_object *o = json_object_new_object();
  json_object_object_add(o, "kind", json_object_new_string("host"));
  json_object_object_add(o, "host", json_object_new_string(ph->h->name));
  json_object_object_add(o, "uri", json_object_new_string(ph->h->uri));
  json_object_object_add(o, "state", json_object_new_string(ph->error ? "unreachable" : "up"));
  json_object_object_add(o, "up", json_object_new_boolean(!ph->error));
  if (ph->error) {
    json_object_object_add(o, "error", json_object_new_string(ph->error));
    return o;
  }
  json_object_object_add(o, "cpus", json_object_new_int((int)ph->cpus));
  json_object_object_add(o, "cpu_percent", json_object_new_double(ph->cpu));
  add_num(o, "memory", ph->mem_total);
  add_num(o, "memory_used", ph->mem_used);
  json_object_object_add(o, "memory_percent",
                         json_object_new_double(ph->mem_total > 0 ? 100.0 * ph->mem_used / ph->mem_total : 0));
  json_object_object_add(o, "vms", json_object_new_int((int)ph->nvms));
  add_num(o, "disk_read", ph->rd);
  add_num(o, "disk_write", ph->wr);
  add_num(o, "net_rx", ph->rx);
  add_num(o, "net_tx", ph->tx);
  return o;
}

static json_object *vm_row(const struct pool_host *ph, const struct pool_vm *v)
{
  json_object *o = json_object_new_object();
  json_object_object_add(o, "kind", json_object_new_string("vm"));
  json_object_object_add(o, "host", json_object_new_string(ph->h->name));
  json_object_object_add(o, "vm", json_object_new_string(v->name));
  json_object_object_add(o, "uuid", json_object_new_string(v->uuid));
  json_object_object_add(o, "state", json_object_new_string(vm_state_name(v->state)));
  json_object_object_add(o, "vcpus", json_object_new_int((int)v->vcpus));
  json_object_object_add(o, "cpu_percent", json_object_new_double(v->cpu));
  add_num(o, "memory", v->mem);
  add_num(o, "memory_used", v->rss);
  add_num(o, "disk_read", v->rd);
  add_num(o, "disk_write", v->wr);
  add_num(o, "net_rx", v->rx);
  add_num(o, "net_tx", v->tx);
  return o;
}

/* ---- --alert KIND.METRIC OP VALUE -------------------------------------------------------- */
enum op { OP_GT, OP_GE, OP_LT, OP_LE, OP_EQ, OP_NE };
struct alert {
  const char *text;
  bool host;         /* host. or vm. */
  const char *key;   /* of the row */
  const char *key2;  /* added to key (disk: read + write) */
  enum op op;
  double value;
};

struct metric {
  const char *name, *key, *key2;
  bool host, vm, size; /* for hosts, for VMs; its value may be a size (100M) */
};
static const struct metric metrics[] = {
  { "cpu", "cpu_percent", NULL, true, true, false },
  { "memory", "memory_percent", NULL, true, false, false },
  { "memory", "memory_used", NULL, false, true, true },
  { "up", "up", NULL, true, false, false },
  { "vms", "vms", NULL, true, false, false },
  { "disk", "disk_read", "disk_write", true, true, true },
  { "disk_read", "disk_read", NULL, true, true, true },
  { "disk_write", "disk_write", NULL, true, true, true },
  { "net", "net_rx", "net_tx", true, true, true },
  { "net_rx", "net_rx", NULL, true, true, true },
  { "net_tx", "net_tx", NULL, true, true, true },
  { NULL, NULL, NULL, false, false, false },
};

static int parse_alert(const char *s, struct alert *a)
{
  *a = (struct alert){ .text = s };
  const char *dot = strchr(s, '.');
  if (!dot) return -1;
  if ((size_t)(dot - s) == 4 && strncmp(s, "host", 4) == 0) a->host = true;
  else if (!((size_t)(dot - s) == 2 && strncmp(s, "vm", 2) == 0)) return -1;
  const char *m = dot + 1, *o = m;
  while (*o && strchr("abcdefghijklmnopqrstuvwxyz_", *o)) o++;
  static const char *const ops[] = { [OP_GE] = ">=", [OP_LE] = "<=", [OP_EQ] = "==", [OP_NE] = "!=",
                                     [OP_GT] = ">", [OP_LT] = "<" };
  static const enum op order[] = { OP_GE, OP_LE, OP_EQ, OP_NE, OP_GT, OP_LT };
  size_t oplen = 0;
  for (size_t k = 0; k < sizeof order / sizeof *order && !oplen; k++)
    if (strncmp(o, ops[order[k]], strlen(ops[order[k]])) == 0) a->op = order[k], oplen = strlen(ops[order[k]]);
  if (!oplen) return -1;
  const struct metric *mt = NULL;
  for (const struct metric *x = metrics; x->name && !mt; x++)
    if (strlen(x->name) == (size_t)(o - m) && strncmp(x->name, m, (size_t)(o - m)) == 0 && (a->host ? x->host : x->vm))
      mt = x;
  if (!mt) return -2;
  a->key = mt->key, a->key2 = mt->key2;
  const char *v = o + oplen;
  char *end;
  /* A plain decimal number: no spaces, no hex, no inf or nan. */
  if (!((*v >= '0' && *v <= '9') || *v == '.' || *v == '-')) return -1;
  for (const char *q = v; *q; q++)
    if (*q == 'x' || *q == 'X') return -1;
  a->value = strtod(v, &end);
  if (end == v || !isfinite(a->value)) return -1;
  if (*end == '%' && !mt->size && end[1] == '\0') return 0;
  if (*end == '\0') return 0;
  uint64_t bytes;
  if (mt->size && vm_parse_size(v, 'B', &bytes) == 0) {
    a->value = (double)bytes;
    return 0;
  }
  return -1;
}

static bool crosses(const struct alert *a, json_object *row, double *value)
{
  json_object *kind = json_object_object_get(row, "kind"), *v, *v2;
  if (strcmp(json_object_get_string(kind), a->host ? "host" : "vm") != 0) return false;
  if (!json_object_object_get_ex(row, a->key, &v) || !v) return false; /* a host that did not answer */
  double x = json_object_is_type(v, json_type_boolean) ? json_object_get_boolean(v) : json_object_get_double(v);
  if (a->key2 && json_object_object_get_ex(row, a->key2, &v2) && v2) x += json_object_get_double(v2);
  *value = x;
  switch (a->op) {
  case OP_GT: return x > a->value;
  case OP_GE: return x >= a->value;
  case OP_LT: return x < a->value;
  case OP_LE: return x <= a->value;
  case OP_EQ: return x == a->value;
  case OP_NE: return x != a->value;
  }
  return false;
}

static const struct vm_column alert_cols[] = {
  { "alert", "ALERT", VM_COL_STR, NULL }, { "host", "HOST", VM_COL_STR, NULL },
  { "vm", "VM", VM_COL_STR, NULL },       { "value", "VALUE", VM_COL_PCT, NULL },
  { "error", "ERROR", VM_COL_STR, NULL }, { NULL, NULL, 0, NULL },
};

int cmd_collect(int argc, char **argv)
{
  struct poptOption table[] = {
    { "interval", '\0', POPT_ARG_INT, &o_interval, 0, "seconds between the two samples (1 to 86400; default: 1)", "SECONDS" },
    { "timeout", '\0', POPT_ARG_INT, &o_timeout, 0, "seconds a host has to answer, beyond the interval (1 to 3600; default: 10)", "SECONDS" },
    { "alert", '\0', POPT_ARG_ARGV, &o_alerts, 0, "print what crosses EXPR (host.cpu>90, vm.net>100M ...) and exit 6 if anything does; repeatable", "EXPR" },
    VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  vm_output_prom_ok = true;
  int rc = vm_parse(&ctx, argc, argv, table, "[HOST...]",
                    "CPU, memory, disk and network rates of each host of the hosts file and of\n"
                    "each VM running there, from two samples an interval apart. A host that does\n"
                    "not answer is reported, not fatal. -o prom prints the Prometheus text format.",
                    0, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if (o_interval < 1 || o_interval > 86400)
    return vm_usage_error("invalid --interval %d: expected 1 to 86400 seconds", o_interval);
  if (o_timeout < 1 || o_timeout > 3600)
    return vm_usage_error("invalid --timeout %d: expected 1 to 3600 seconds", o_timeout);
  size_t nalerts = 0;
  while (o_alerts && o_alerts[nalerts]) nalerts++;
  struct alert *alerts = calloc(nalerts + 1, sizeof *alerts);
  if (!alerts) abort();
  for (size_t i = 0; i < nalerts; i++) {
    int prc = parse_alert(o_alerts[i], &alerts[i]);
    if (prc == -2) {
      free(alerts);
      return vm_usage_error("invalid --alert '%s': no such metric (hosts: cpu, memory, up, vms, disk, net, "
                            "disk_read, disk_write, net_rx, net_tx; VMs: cpu, memory, disk, net ...)", o_alerts[i]);
    }
    if (prc < 0) {
      free(alerts);
      return vm_usage_error("invalid --alert '%s': expected host.METRIC or vm.METRIC, then >, >=, <, <=, == or !=, "
                            "then a number", o_alerts[i]);
    }
  }
  if (nalerts && vm_opts.format == VM_FMT_PROM) {
    free(alerts);
    return vm_usage_error("--alert prints crossings: use -o table, tsv or json with it");
  }
  vm_catch_signals();
  struct pool pool;
  rc = pool_collect(&pool, nargs ? args : NULL, o_interval * 1000, o_timeout, 0);
  if (rc < 0) rc = vm_fail_interrupted();
  if (rc) {
    pool_free(&pool);
    free(alerts);
    return rc;
  }
  CLEANUP_JSON json_object *rows = json_object_new_array();
  for (size_t i = 0; i < pool.n; i++) {
    const struct pool_host *ph = &pool.v[i];
    if (ph->error) vm_warn("host '%s' did not answer: %s", ph->h->name, ph->error);
    json_object_array_add(rows, host_row(ph));
    for (size_t k = 0; k < ph->nvms; k++) json_object_array_add(rows, vm_row(ph, &ph->vms[k]));
  }
  bool none = pool_up(&pool) == 0;
  pool_free(&pool);
  if (none) {
    /* The rows say why; the exit says that nothing was measured. */
    rc = nalerts ? 0 : vm_opts.format == VM_FMT_PROM ? 0 : vm_print_list(rows, cols);
    free(alerts);
    return rc ? rc : vm_fail(VM_EXIT_FAIL, "no host of %s answered", vm_hosts_path());
  }
  if (nalerts) {
    CLEANUP_JSON json_object *hits = json_object_new_array();
    for (size_t i = 0; i < nalerts; i++)
      for (size_t r = 0; r < json_object_array_length(rows); r++) {
        json_object *row = json_object_array_get_idx(rows, r);
        double value;
        if (!crosses(&alerts[i], row, &value)) continue;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "alert", json_object_new_string(alerts[i].text));
        json_object_object_add(o, "host", json_object_get(json_object_object_get(row, "host")));
        json_object_object_add(o, "vm", json_object_get(json_object_object_get(row, "vm")));
        json_object_object_add(o, "value", json_object_new_double(value));
        json_object_object_add(o, "error", json_object_get(json_object_object_get(row, "error")));
        json_object_array_add(hits, o);
      }
    free(alerts);
    rc = vm_print_list(hits, alert_cols);
    if (rc) return rc;
    return json_object_array_length(hits) ? VM_EXIT_VERIFY : 0;
  }
  free(alerts);
  if (vm_opts.format != VM_FMT_PROM) return vm_print_list(rows, cols);
  CLEANUP_JSON json_object *hrows = json_object_new_array(), *vrows = json_object_new_array();
  for (size_t r = 0; r < json_object_array_length(rows); r++) {
    json_object *row = json_object_array_get_idx(rows, r);
    bool host = strcmp(json_object_get_string(json_object_object_get(row, "kind")), "host") == 0;
    json_object_array_add(host ? hrows : vrows, json_object_get(row));
  }
  if ((rc = vm_print_prom(hrows, host_prom))) return rc;
  return vm_print_prom(vrows, vm_prom);
}
