/* vmbackup init and vmbackup key: a repository made, its key exported,
 * imported, or wrapped under a new passphrase. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "fs.h"
#include "vmbackup.h"

int cmd_init(int argc, char **argv)
{
  char *encryption = NULL, *chunk = NULL;
  int level = 1, cost = 17;
  struct poptOption table[] = {
    { "encryption", 'e', POPT_ARG_STRING, &encryption, 0,
      "aes-256-gcm (the default: the passphrase is needed) or none (said so: anyone who reads the repository reads "
      "the disks)", "MODE" },
    { "chunk-size", '\0', POPT_ARG_STRING, &chunk, 0,
      "chunk size, a power of two from 64K to 4M (default 256K; fixed for the repository's life)", "SIZE" },
    { "zstd-level", '\0', POPT_ARG_INT, &level, 0, "zstd compression level, 1 to 19 (default 1: the fastest; 3 stores about 6% less)", "N" },
    { "kdf-cost", '\0', POPT_ARG_INT, &cost, 0,
      "scrypt's cost: N = 2^COST, 10 to 20 (default 17: 128 MiB and about a second per open)", "COST" },
    VB_POPT_REPO, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO",
                    "Make a repository in the folder REPO (new, or empty). Encrypted by default: the key is random "
                    "and wrapped under the passphrase (--passphrase-file or VMKIT_PASSPHRASE, never an argument) "
                    "by scrypt.",
                    1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  struct vb_config cfg = { .chunk_size = VB_CHUNK_DEFAULT, .zstd_level = level, .encrypted = true };
  if (encryption && strcmp(encryption, "none") == 0) cfg.encrypted = false;
  else if (encryption && strcmp(encryption, "aes-256-gcm") != 0)
    return vm_usage_error("unknown --encryption '%s': use aes-256-gcm or none", encryption);
  if (chunk) {
    uint64_t cs;
    if (vm_parse_size(chunk, 'B', &cs) < 0 || cs < VB_CHUNK_MIN || cs > VB_CHUNK_MAX || (cs & (cs - 1)))
      return vm_usage_error("invalid --chunk-size '%s': a power of two from 64K to 4M", chunk);
    cfg.chunk_size = (unsigned)cs;
  }
  if (level < 1 || level > 19) return vm_usage_error("invalid --zstd-level %d: 1 to 19", level);
  if (cost < 10 || cost > 20) return vm_usage_error("invalid --kdf-cost %d: 10 to 20", cost);
  char *pass = NULL;
  size_t plen = 0;
  rc = vb_passphrase(vb_passfile, &pass, &plen);
  if (rc > 1) return rc;
  if (cfg.encrypted && rc == 1)
    return vm_usage_error("an encrypted repository needs a passphrase: --passphrase-file FILE or VMKIT_PASSPHRASE "
                          "(or --encryption none)");
  if (!cfg.encrypted && rc == 0) {
    vb_passphrase_free(pass, plen);
    return vm_usage_error("--encryption none takes no passphrase: unset VMKIT_PASSPHRASE or drop --passphrase-file");
  }
  rc = 0;
  if (RAND_bytes(cfg.id, sizeof cfg.id) != 1) return vm_fail(VM_EXIT_FAIL, "no randomness for the repository ID");
  struct vb_keys keys;
  if (vb_keys_new(&keys, cfg.encrypted) < 0) return vm_fail(VM_EXIT_FAIL, "no randomness for the key");
  if (cfg.encrypted) {
    char aad[VB_CONFIG_AAD_MAX];
    if (vb_kdf_new(&cfg.kdf, cost) < 0) rc = vm_fail(VM_EXIT_FAIL, "no randomness for the salt");
    vb_config_aad(&cfg, aad);
    if (rc == 0 && vb_key_wrap(&keys, pass, plen, &cfg.kdf, aad, cfg.wrapped) < 0)
      rc = vm_fail(VM_EXIT_FAIL, "cannot wrap the key (scrypt out of memory?)");
    vb_passphrase_free(pass, plen);
  }
  vb_keys_wipe(&keys);
  if (rc == 0) rc = vb_repo_create(args[0], &cfg);
  if (rc) return rc;
  char hex[33];
  vb_hex16(cfg.id, hex);
  char cs[16];
  if (cfg.encrypted)
    vm_info("made repository '%s' (%s): encrypted with AES-256-GCM, chunks of %s; keep the passphrase, and a copy "
            "of the key ('vmbackup key export')", args[0], hex, vm_format_size(cfg.chunk_size, cs));
  else
    vm_warn("made repository '%s' (%s) WITHOUT encryption: anyone who can read it reads the VMs' disks", args[0], hex);
  return 0;
}

/* The config as it is in the repository, checked. */
static int read_config(struct vb_fs *fs, const char *repo, char **text, size_t *len, struct vb_config *cfg)
{
  *text = vb_fs_read(fs, "config", 64u << 10, len);
  if (!*text) {
    if (errno == ENOENT) return vm_fail(VM_EXIT_NOTFOUND, "no repository at '%s' (no config file)", repo);
    return vm_fail_errno(VM_EXIT_FAIL, "cannot read '%s/config'", repo);
  }
  const char *why;
  if (vb_config_parse(*text, *len, cfg, &why) < 0) {
    free(*text);
    *text = NULL;
    return vm_fail(VM_EXIT_VERIFY, "repository '%s': config: %s", repo, why);
  }
  return 0;
}

/* A config put in place of the repository's (key import and change): 0, or an
 * exit code after a message (a server that refuses it says why). */
static int put_config(struct vb_fs *fs, const char *repo, const char *text, size_t len)
{
  /* Named after the lock held (tmp/ files are their writer's lock's); without
   * one (a local repository whose locks/ is gone), after this process. */
  CLEANUP_FREE char *tmp = *vb_fs_lock_name(fs) ? vm_strdup_printf("tmp/%s.config", vb_fs_lock_name(fs))
                                                 : vm_strdup_printf("tmp/key-import.%d.config", (int)getpid());
  if (vb_fs_put(fs, tmp, "config", text, len, true) == 0) return 0;
  if (errno == EPERM && *vb_fs_error(fs)) return vm_fail(VM_EXIT_STATE, "%s", vb_fs_error(fs));
  return vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s/config'", repo);
}

static int key_export(const char *repo, const char *file)
{
  CLEANUP_FREE char *text = NULL;
  size_t len;
  struct vb_config cfg;
  struct vb_fs *fs;
  int rc = vb_fs_open(repo, &fs);
  if (rc) return rc;
  rc = read_config(fs, repo, &text, &len, &cfg);
  vb_fs_close(fs);
  if (rc) return rc;
  if (!cfg.encrypted) return vm_fail(VM_EXIT_STATE, "repository '%s' is not encrypted: it has no key", repo);
  if (!file) {
    if (fwrite(text, 1, len, stdout) != len || fflush(stdout) != 0)
      return vm_fail_errno(VM_EXIT_FAIL, "cannot write the key");
    return 0;
  }
  if (vm_write_file_atomic(file, text, len, 0600) < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s'", file);
  return 0;
}

/* A config that opens with this passphrase, written in place of the repository's. */
static int key_import_into(struct vb_fs *fs, const char *repo, const char *file)
{
  size_t len;
  CLEANUP_FREE char *text = vm_read_file(file, 64u << 10, &len);
  if (!text) return vm_fail_errno(VM_EXIT_NOTFOUND, "cannot read '%s'", file);
  struct vb_config in;
  const char *why;
  if (vb_config_parse(text, len, &in, &why) < 0) return vm_fail(VM_EXIT_VERIFY, "'%s' is no exported key: %s", file, why);
  if (!in.encrypted) return vm_fail(VM_EXIT_USAGE, "'%s' holds no key (a repository without encryption)", file);
  CLEANUP_FREE char *cur = NULL;
  size_t curlen;
  struct vb_config have;
  if (vb_fs_exists(fs, "config") == 1) {
    int rc = read_config(fs, repo, &cur, &curlen, &have);
    /* A damaged config is what an import repairs; only another repository's key is refused. */
    if (rc == 0 && memcmp(have.id, in.id, sizeof in.id) != 0)
      return vm_fail(VM_EXIT_STATE, "'%s' is the key of another repository", file);
    if (rc && rc != VM_EXIT_VERIFY) return rc;
  } else if (vb_fs_exists(fs, "snapshots") != 1) {
    return vm_fail(VM_EXIT_NOTFOUND, "no repository at '%s'", repo);
  }
  char *pass;
  size_t plen;
  int rc = vb_passphrase(vb_passfile, &pass, &plen);
  if (rc == 1) return vm_usage_error("give the key's passphrase with --passphrase-file or VMKIT_PASSPHRASE");
  if (rc) return rc;
  char aad[VB_CONFIG_AAD_MAX];
  vb_config_aad(&in, aad);
  struct vb_keys k;
  int u = vb_key_unwrap(in.wrapped, pass, plen, &in.kdf, aad, &k);
  vb_passphrase_free(pass, plen);
  vb_keys_wipe(&k);
  if (u) return vm_fail(VM_EXIT_FAIL, "'%s': wrong passphrase (or the key was altered)", file);
  if ((rc = put_config(fs, repo, text, len))) return rc;
  vm_info("imported the key into '%s'", repo);
  return 0;
}

static int key_import(const char *repo, const char *file)
{
  struct vb_fs *fs;
  int rc = vb_fs_open(repo, &fs);
  if (rc) return rc;
  /* A shared lock, as a backup's (a repair may run while backups do), whose
   * name its tmp/ file bears. A local repository whose locks/ folder is gone
   * is repaired without one; a remote one needs it. */
  vm_errors_mute(true);
  rc = vb_fs_lock(fs, false, vm_lock_wait_seconds());
  vm_errors_mute(false);
  if (rc && (vb_fs_remote(fs) || rc != VM_EXIT_FAIL)) rc = vm_fail(rc, "%s", vm_last_error());
  else rc = 0;
  if (rc == 0) rc = key_import_into(fs, repo, file);
  vb_fs_close(fs);
  return rc;
}

static int key_change(const char *repo, const char *newfile)
{
  struct vb_repo *r;
  int rc = vb_open_repo(repo, VB_LOCK_EXCLUSIVE, &r);
  if (rc) return rc;
  if (!r->cfg.encrypted) {
    vb_repo_close(r);
    return vm_fail(VM_EXIT_STATE, "repository '%s' is not encrypted: it has no passphrase", repo);
  }
  char *pass = NULL;
  size_t plen = 0;
  if (newfile) {
    rc = vb_passphrase(newfile, &pass, &plen);
  } else if (getenv("VMKIT_NEW_PASSPHRASE") && *getenv("VMKIT_NEW_PASSPHRASE")) {
    pass = vm_strdup(getenv("VMKIT_NEW_PASSPHRASE"));
    plen = strlen(pass);
  } else {
    rc = vm_usage_error("give the new passphrase with --new-passphrase-file or VMKIT_NEW_PASSPHRASE");
  }
  struct vb_config cfg = r->cfg;
  char aad[VB_CONFIG_AAD_MAX];
  if (rc == 0 && vb_kdf_new(&cfg.kdf, r->cfg.kdf.log_n) < 0) rc = vm_fail(VM_EXIT_FAIL, "no randomness for the salt");
  vb_config_aad(&cfg, aad);
  if (rc == 0 && vb_key_wrap(&r->keys, pass, plen, &cfg.kdf, aad, cfg.wrapped) < 0)
    rc = vm_fail(VM_EXIT_FAIL, "cannot wrap the key");
  vb_passphrase_free(pass, plen);
  CLEANUP_FREE char *text = rc ? NULL : vb_config_encode(&cfg);
  if (rc == 0 && !text) rc = vm_fail(VM_EXIT_FAIL, "cannot encode the config");
  if (rc == 0) rc = put_config(r->fs, repo, text, strlen(text));
  if (rc == 0) vm_info("changed the passphrase of '%s'; the old one no longer opens it", repo);
  vb_repo_close(r);
  return rc;
}

int cmd_key(int argc, char **argv)
{
  char *newfile = NULL;
  struct poptOption table[] = {
    { "new-passphrase-file", '\0', POPT_ARG_STRING, &newfile, 0,
      "change-passphrase: the new passphrase, from the first line of FILE (else VMKIT_NEW_PASSPHRASE)", "FILE" },
    VB_POPT_REPO, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "export REPO [FILE] | import REPO FILE | change-passphrase REPO",
                    "export: write the repository's key (its config, the key wrapped under the passphrase) to FILE "
                    "or standard output, to keep apart from the repository. import: put an exported key back (a "
                    "lost or damaged config); the passphrase must open it. change-passphrase: wrap the same key "
                    "under a new passphrase; no chunk changes.",
                    2, 3, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if (strcmp(args[0], "export") == 0) return key_export(args[1], nargs > 2 ? args[2] : NULL);
  if (strcmp(args[0], "import") == 0) {
    if (nargs != 3) return vm_usage_error("key import needs REPO and FILE");
    return key_import(args[1], args[2]);
  }
  if (strcmp(args[0], "change-passphrase") == 0) {
    if (nargs != 2) return vm_usage_error("key change-passphrase takes REPO only");
    return key_change(args[1], newfile);
  }
  return vm_usage_error("unknown key command '%s': export, import or change-passphrase", args[0]);
}
