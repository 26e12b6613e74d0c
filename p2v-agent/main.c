/* p2v-agent: describes a physical server and streams its disks to p2v-convert. */
#include <string.h>
#include <unistd.h>

#include "agent.h"

static const char **opt_disks;

static struct poptOption disk_table[] = {
  { "disk", '\0', POPT_ARG_ARGV, &opt_disks, 0,
    "a whole disk to describe or send (a device or an image file; repeat it; default: every disk of this server)",
    "DEV" },
  POPT_TABLEEND
};

static int cmd_inventory(int argc, char **argv)
{
  struct poptOption table[] = {
    { NULL, '\0', POPT_ARG_INCLUDE_TABLE, disk_table, 0, NULL, NULL },
    VM_POPT_LOCAL,
    POPT_TABLEEND,
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "",
                    "Print this server's CPU, memory, disks, NICs, OS and boot mode as JSON.", 0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  size_t nd = 0;
  while (opt_disks && opt_disks[nd]) nd++;
  struct pa_disk *disks = NULL;
  size_t n = 0;
  if ((rc = pa_find_disks(opt_disks, nd, &disks, &n))) return rc;
  CLEANUP_JSON json_object *inv = pa_inventory(disks, n);
  pa_disks_free(disks, n);
  /* JSON unless another format is asked for. */
  if (vm_opts.output && vm_opts.format != VM_FMT_JSON) {
    static const struct vm_column cols[] = { { "memory", "memory", VM_COL_BYTES }, { "size", "size", VM_COL_BYTES },
                                             { NULL, NULL, 0 } };
    return vm_print_record(inv, cols);
  }
  printf("%s\n", json_object_to_json_string_ext(inv, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
  return 0;
}

static int cmd_send(int argc, char **argv)
{
  char *block_size = NULL, *level = NULL, *threads = NULL, *max_freeze = NULL, *final_delta = NULL, *max_passes = NULL;
  int online = 0;
  struct poptOption table[] = {
    { NULL, '\0', POPT_ARG_INCLUDE_TABLE, disk_table, 0, NULL, NULL },
    { "block-size", '\0', POPT_ARG_STRING, &block_size, 0,
      "the unit of reading, hashing and compressing: a power of two from 64K to 16M (default: 2M)", "SIZE" },
    { "level", '\0', POPT_ARG_STRING, &level, 0, "zstd compression level, 1 to 19 (default: 3)", "N" },
    { "threads", '\0', POPT_ARG_STRING, &threads, 0, "compression threads (default: one per core, at most 8)", "N" },
    { "online", '\0', POPT_ARG_NONE, &online, 0,
      "the server keeps running: delta passes, then a final pass with its mounted file systems frozen", NULL },
    { "max-freeze", '\0', POPT_ARG_STRING, &max_freeze, 0,
      "with --online: the longest freeze; past it, thaw and fail (default: 10s)", "DURATION" },
    { "final-delta", '\0', POPT_ARG_STRING, &final_delta, 0,
      "with --online: freeze for the final pass once a delta pass finds at most this much changed (default: 64M)",
      "SIZE" },
    { "max-passes", '\0', POPT_ARG_STRING, &max_passes, 0,
      "with --online: the final pass comes at the latest as this pass, 2 to 100 (default: 8)", "N" },
    VM_POPT_LOCAL,
    POPT_TABLEEND,
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "",
                    "Stream this server's disks (only the blocks in use, compressed and checksummed) to stdout, "
                    "for p2v-convert on a KVM host.",
                    0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  uint64_t bs = 2 << 20, lvl = 3, thr = 0;
  if (block_size && (vm_parse_size(block_size, 'B', &bs) || bs < VM_STREAM_MIN_BLOCK || bs > VM_STREAM_MAX_BLOCK ||
                     (bs & (bs - 1))))
    return vm_usage_error("invalid --block-size '%s': a power of two from 64K to 16M", block_size);
  if (level && vm_parse_uint(level, 1, 19, &lvl)) return vm_usage_error("invalid --level '%s': 1 to 19", level);
  if (threads && vm_parse_uint(threads, 1, 64, &thr)) return vm_usage_error("invalid --threads '%s': 1 to 64", threads);
  struct pa_online_opts oo = { .max_freeze_ms = 10000, .final_delta = 64 << 20, .max_passes = 8 };
  int64_t secs;
  uint64_t u;
  if (max_freeze && (vm_parse_duration(max_freeze, &secs) || secs < 1 || secs > 3600))
    return vm_usage_error("invalid --max-freeze '%s': a duration from 1s to 1h (90s, 2m)", max_freeze);
  if (max_freeze) oo.max_freeze_ms = secs * 1000;
  if (final_delta && vm_parse_size(final_delta, 'M', &oo.final_delta))
    return vm_usage_error("invalid --final-delta '%s': a size (64M)", final_delta);
  if (max_passes && vm_parse_uint(max_passes, 2, 100, &u)) return vm_usage_error("invalid --max-passes '%s': 2 to 100", max_passes);
  if (max_passes) oo.max_passes = (unsigned)u;
  if (!online && (max_freeze || final_delta || max_passes))
    return vm_usage_error("--max-freeze, --final-delta and --max-passes go with --online");
  size_t nd = 0;
  while (opt_disks && opt_disks[nd]) nd++;
  struct pa_disk *disks = NULL;
  size_t n = 0;
  if ((rc = pa_find_disks(opt_disks, nd, &disks, &n))) return rc;
  if (n > VM_STREAM_MAX_DISKS) rc = vm_fail(VM_EXIT_USAGE, "%zu disks: a stream carries at most %d", n, VM_STREAM_MAX_DISKS);
  vm_catch_signals();
  struct pa_online *on = NULL;
  if (!rc && online && isatty(STDOUT_FILENO))
    rc = vm_fail(VM_EXIT_USAGE, "the stream is binary: send it to p2v-convert (p2v-agent send | ssh HOST p2v-convert ...)");
  if (!rc && online) rc = pa_online_open(disks, n, &oo, &on);
  if (!rc) rc = pa_send(disks, n, (uint32_t)bs, (int)lvl, (int)thr, on, &oo);
  pa_online_close(on);
  pa_disks_free(disks, n);
  return rc;
}

static const struct vm_verb verbs[] = {
  { "inventory", cmd_inventory, "print this server's hardware, disks, NICs and OS as JSON" },
  { "send", cmd_send, "stream the disks (used blocks only) to stdout for p2v-convert" },
  { NULL, NULL, NULL },
};

int main(int argc, char **argv)
{
  vm_init("p2v-agent");
  return vm_dispatch_local(argc, argv, verbs, "Turn this physical server into a VM: describe it, stream its disks.");
}
