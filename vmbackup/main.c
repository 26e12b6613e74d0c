/* vmbackup: deduplicating, incremental, encrypted backups of VMs. */
#include <string.h>
#include <time.h>

#include "vmbackup.h"

char *vb_passfile;
struct poptOption vb_repo_table[] = {
  { "passphrase-file", '\0', POPT_ARG_STRING, &vb_passfile, 0,
    "read the repository's passphrase from the first line of FILE (else VMKIT_PASSPHRASE)", "FILE" },
  POPT_TABLEEND
};

int vb_open_repo(const char *name, enum vb_lockmode lock, struct vb_repo **r)
{
  return vb_repo_open(name, vb_passfile, lock, vm_lock_wait_seconds(), r);
}

long long vb_parse_utc(const char *s)
{
  struct tm tm = { 0 };
  const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (!end || *end) return -1;
  return (long long)timegm(&tm);
}

static const struct vm_verb verbs[] = {
  { "init", cmd_init, "make a repository, encrypted unless told otherwise" },
  { "key", cmd_key, "export, import or change the passphrase of a repository's key" },
  { "backup", cmd_backup, "back up every disk of VMs, running or shut off, incrementally" },
  { "list", cmd_list, "list the snapshots of a repository" },
  { "restore", cmd_restore, "restore a snapshot's disks into a folder" },
  { "restore-file", cmd_restore_file, "copy files from inside a snapshot's guest, reading only their chunks" },
  { "ls", cmd_ls, "list a folder inside a snapshot's guest" },
  { "serve", cmd_serve, "serve a snapshot's disk as a read-only NBD export (nbdkit)" },
  { "prune", cmd_prune, "remove the snapshots no --keep rule keeps, per VM, then compact" },
  { "compact", cmd_compact, "reclaim the space of chunks no snapshot names" },
  { "check", cmd_check, "check a repository's structure, or every chunk with --read-data" },
  { NULL, NULL, NULL },
};

int main(int argc, char **argv)
{
  vb_crypto_init();
  vm_init("vmbackup");
  return vm_dispatch(argc, argv, verbs,
                     "Deduplicating, incremental, encrypted backups of VMs: back up, list, restore, check.");
}
