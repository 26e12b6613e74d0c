/* vmbackup serve, ls and restore-file: a disk of a snapshot as a read-only NBD
 * export, through nbdkit and the plugin vmbackup ships (nbdkit is the NBD
 * server; vmbackup writes none); files from inside it through libguestfs,
 * which reads only the chunks it touches. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <string.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "vmbackup.h"
#include "vmkit-gfs.h"

/* The plugin: VMKIT_NBDKIT_PLUGIN, else beside the program (the build tree:
 * vmbackup/plugin/), else PREFIX/lib/vmkit beside PREFIX/bin. */
static char *plugin_path(void)
{
  const char *env = getenv("VMKIT_NBDKIT_PLUGIN");
  if (env && *env) return vm_strdup(env);
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    char *dir = dirname(exe);
    char *p = vm_strdup_printf("%s/plugin/nbdkit-vmbackup-plugin.so", dir);
    if (access(p, R_OK) == 0) return p;
    free(p);
    p = vm_strdup_printf("%s/../lib/vmkit/nbdkit-vmbackup-plugin.so", dir);
    if (access(p, R_OK) == 0) return p;
    free(p);
  }
  return vm_strdup("/usr/local/lib/vmkit/nbdkit-vmbackup-plugin.so");
}

/* The last line nbdkit wrote on its stderr (its file in the server's folder):
 * why it failed. Caller frees; NULL when none. */
static char *nbdkit_last_line(const struct vb_server *s)
{
  CLEANUP_FREE char *errf = vm_strdup_printf("%s/nbdkit.err", s->dir);
  size_t n;
  CLEANUP_FREE char *err = vm_read_file(errf, 65536, &n);
  char *last = NULL;
  for (char *l = err ? strtok(err, "\n") : NULL; l; l = strtok(NULL, "\n")) last = l;
  return last ? vm_strdup(last) : NULL;
}

/* Opens the repository only to resolve the snapshot the user named (its ID or
 * a prefix): the server opens it again. */
static int resolve_id(const char *repo, const char *name, char **id)
{
  struct vb_repo *r;
  int rc = vb_open_repo(repo, VB_LOCK_NONE, &r);
  if (rc) return rc;
  rc = vb_snapshot_resolve(r, name, id);
  vb_repo_close(r);
  return rc;
}

/* Whether the server answers an NBD handshake with the disk's size. */
static bool handshake(const struct vb_server *s, const char *listen, int port)
{
  struct nbd_handle *h = nbd_create();
  if (!h) return false;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  bool ok = (s->sock ? nbd_connect_unix(h, s->sock) : nbd_connect_tcp(h, listen ? listen : "127.0.0.1", ps)) == 0 &&
            nbd_get_size(h) >= 0;
  if (ok) nbd_shutdown(h, 0);
  nbd_close(h);
  return ok;
}

int vb_server_start(const char *repo, const char *snap, const char *disk, const char *sock, const char *listen,
                    int port, struct vb_server *s)
{
  memset(s, 0, sizeof *s);
  s->pid = -1;
  s->wfd = -1;
  s->dir = vm_scratch_dir("serve");
  if (!s->dir) return VM_EXIT_FAIL;
  s->sock = sock ? vm_strdup(sock) : port ? NULL : vm_strdup_printf("%s/nbd.sock", s->dir);
  s->stats = vm_strdup_printf("%s/stats.json", s->dir);
  CLEANUP_FREE char *pidfile = vm_strdup_printf("%s/nbdkit.pid", s->dir);
  CLEANUP_FREE char *plugin = plugin_path();
  if (access(plugin, R_OK) != 0) return vm_fail(VM_EXIT_FAIL, "cannot find vmbackup's nbdkit plugin '%s'", plugin);
  struct vm_strv a = { 0 };
  vm_strv_add(&a, "nbdkit");
  vm_strv_add(&a, "--foreground");
  vm_strv_add(&a, "--readonly");
  vm_strv_add(&a, "--pidfile");
  vm_strv_add(&a, pidfile);
  if (s->sock) {
    vm_strv_add(&a, "--unix");
    vm_strv_add(&a, s->sock);
  } else {
    vm_strv_add(&a, "--ipaddr");
    vm_strv_add(&a, listen ? listen : "127.0.0.1");
    vm_strv_add(&a, "--port");
    vm_strv_addf(&a, "%d", port);
  }
  vm_strv_add(&a, plugin);
  vm_strv_addf(&a, "repo=%s", repo);
  vm_strv_addf(&a, "snapshot=%s", snap);
  if (disk) vm_strv_addf(&a, "disk=%s", disk);
  if (vb_passfile) vm_strv_addf(&a, "passphrase-file=%s", vb_passfile);
  vm_strv_addf(&a, "stats=%s", s->stats);
  CLEANUP_FREE char *errf = vm_strdup_printf("%s/nbdkit.err", s->dir);
  CLEANUP_FREE char *shown = vm_argv_str(a.v);
  vm_debug("running %s", shown);
  /* nbdkit runs under a guardian of ours, a child that holds the read end of a
   * pipe whose write end only this process has: when this process ends,
   * however it ends, or stops the server, the guardian sees the pipe close and
   * stops nbdkit (SIGTERM, then SIGKILL after 5 s: nbdkit waits for its clients,
   * and a VM stays connected). Neither is in this process's group: a Ctrl-C is
   * this process's to act on. */
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) < 0) {
    vm_strv_free(&a);
    return vm_fail_errno(VM_EXIT_FAIL, "cannot run nbdkit");
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(pfd[0]);
    close(pfd[1]);
    vm_strv_free(&a);
    return vm_fail_errno(VM_EXIT_FAIL, "cannot run nbdkit");
  }
  if (pid == 0) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    setpgid(0, 0);
    /* Only the pipe's read end stays open (at fd 3). */
    if (pfd[0] != 3 && dup2(pfd[0], 3) < 0) _exit(127);
    close_range(4, ~0u, 0);
    int fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    pid_t nb = fork();
    if (nb == 0) {
      if (fd >= 0) dup2(fd, 2);
      if (nul >= 0) dup2(nul, 0), dup2(nul, 1);
      close(3);
      execvp("nbdkit", a.v);
      _exit(127);
    }
    if (nb < 0) _exit(127);
    for (;;) {
      struct pollfd pf = { 3, POLLIN, 0 };
      int r = poll(&pf, 1, 200);
      int st;
      if (waitpid(nb, &st, WNOHANG) == nb) _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
      if (r > 0) {
        kill(nb, SIGTERM);
        for (int i = 0; i < 50; i++) {
          if (waitpid(nb, &st, WNOHANG) == nb) _exit(0);
          usleep(100000);
        }
        kill(nb, SIGKILL);
        waitpid(nb, &st, 0);
        _exit(0);
      }
    }
  }
  close(pfd[0]);
  s->wfd = pfd[1];
  vm_strv_free(&a);
  s->pid = pid;
  /* Ready when an NBD client gets the disk's size: nbdkit writes its pid file
   * before the plugin takes the repository's lock (after it forks). */
  for (int i = 0; i < 600; i++) {
    int st;
    if (access(pidfile, F_OK) == 0 && handshake(s, listen, port)) return 0;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      s->pid = -1;
      /* nbdkit's last line says why (the plugin's message, a port in use). */
      CLEANUP_FREE char *last = nbdkit_last_line(s);
      char *colon = last ? strstr(last, "vmbackup: ") : NULL;
      int code = last && (strstr(last, "no snapshot") || strstr(last, "has no disk") || strstr(last, "no repository"))
                   ? VM_EXIT_NOTFOUND
                   : last && strstr(last, "is busy") ? VM_EXIT_STATE : VM_EXIT_FAIL;
      /* nbdkit's own prefix ("nbdkit: error: ", "nbdkit: vmbackup[1]: error: ") goes. */
      char *e = last ? strstr(last, "error: ") : NULL;
      if (e && !colon) colon = e - 3;
      unlink(errf); /* said here: not again when it is stopped */
      return vm_fail(code, "cannot serve the snapshot: %s",
                     colon ? colon + 10 : last ? last : (WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "nbdkit is not installed" : "nbdkit failed"));
    }
    if (vm_interrupted()) return vm_fail_interrupted();
    vm_sleep_ms(100);
  }
  return vm_fail(VM_EXIT_TIMEOUT, "nbdkit did not get ready in 60 s");
}

void vb_server_stop(struct vb_server *s)
{
  /* The guardian stops nbdkit when its pipe closes, and ends. */
  if (s->wfd > 0) close(s->wfd);
  s->wfd = -1;
  if (s->pid > 0) {
    int st;
    while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR)
      ;
    s->pid = -1;
  }
  size_t n;
  CLEANUP_FREE char *text = s->stats ? vm_read_file(s->stats, 4096, &n) : NULL;
  if (text) {
    json_object *o = json_tokener_parse(text);
    if (o) {
      json_object *v;
      if (json_object_object_get_ex(o, "chunks_read", &v)) s->chunks_read = (uint64_t)json_object_get_int64(v);
      if (json_object_object_get_ex(o, "chunks", &v)) s->chunks = (uint64_t)json_object_get_int64(v);
      if (json_object_object_get_ex(o, "chunk_size", &v)) s->chunk_size = (uint64_t)json_object_get_int64(v);
      if (json_object_object_get_ex(o, "disk_size", &v)) s->disk_size = (uint64_t)json_object_get_int64(v);
      json_object_put(o);
    }
  }
  /* What the plugin refused while it served (a damaged chunk: its reader saw an
   * I/O error) is said here, or it would go with the folder. */
  CLEANUP_FREE char *errf = s->dir ? vm_strdup_printf("%s/nbdkit.err", s->dir) : NULL;
  size_t en;
  CLEANUP_FREE char *err = errf ? vm_read_file(errf, 65536, &en) : NULL;
  for (char *l = err ? strtok(err, "\n") : NULL; l; l = strtok(NULL, "\n"))
    if (strstr(l, "error: ")) {
      vm_warn("nbdkit: %s", strstr(l, "error: ") + 7);
      break;
    }
  if (s->dir) vm_remove_tree(s->dir);
  free(s->dir);
  free(s->sock);
  free(s->stats);
  s->dir = s->sock = s->stats = NULL;
}

int cmd_serve(int argc, char **argv)
{
  char *sock = NULL, *listen = NULL, **restrict_to = NULL;
  int port = 0, stdio = 0, append_only = 0;
  struct poptOption table[] = {
    { "socket", '\0', POPT_ARG_STRING, &sock, 0, "serve on this Unix socket (default: one in a private folder)", "PATH" },
    { "port", '\0', POPT_ARG_INT, &port, 0, "serve on this TCP port instead", "PORT" },
    { "listen", '\0', POPT_ARG_STRING, &listen, 0, "with --port: the address to listen on (default 127.0.0.1)", "ADDR" },
    { "stdio", '\0', POPT_ARG_NONE, &stdio, 0,
      "instead: serve repositories of this machine to a vmbackup at the other end of ssh (ssh:// repositories), "
      "on standard input and output", NULL },
    { "append-only", '\0', POPT_ARG_NONE, &append_only, 0,
      "with --stdio: refuse whatever removes or replaces history (prune, compact, a new key)", NULL },
    { "restrict-to-path", '\0', POPT_ARG_ARGV, &restrict_to, 0,
      "with --stdio: serve only repositories at or under PATH (repeatable)", "PATH" },
    VB_POPT_REPO, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO SNAPSHOT [DISK] | --stdio",
                       "Serve a disk of a snapshot (the first, or DISK: its target) as a read-only NBD export, through "
                       "nbdkit and vmbackup's plugin, until interrupted. Prints the export's NBD URI on standard output "
                       "(for qemu-img, qemu-nbd, nbdinfo, guestfish --format=raw -a URI). Holds the repository's shared "
                       "lock. With --stdio, the far side of an ssh:// repository instead: the command to force in the "
                       "authorized_keys line of the key that backups log in with.",
                       0, 3, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  size_t nr = 0;
  while (restrict_to && restrict_to[nr]) nr++;
  if (stdio) {
    if (nargs || sock || port || listen)
      return vm_usage_error("--stdio takes no repository, snapshot, --socket or --port: the client names the repository");
    return vb_serve_stdio(restrict_to, nr, append_only);
  }
  if (append_only || nr) return vm_usage_error("--append-only and --restrict-to-path go with --stdio");
  if (nargs < 2) return vm_usage_error("give a repository and a snapshot (or --stdio)");
  if (sock && port) return vm_usage_error("--socket and --port exclude each other");
  if (port < 0 || port > 65535) return vm_usage_error("invalid --port %d", port);
  if (listen && !port) return vm_usage_error("--listen goes with --port");
  vm_catch_signals();
  /* Checked here first, so that a wrong snapshot or passphrase is our own one line. */
  CLEANUP_FREE char *id = NULL;
  if ((rc = resolve_id(args[0], args[1], &id))) return rc;
  struct vb_server s;
  if ((rc = vb_server_start(args[0], id, nargs > 2 ? args[2] : NULL, sock, listen, port, &s))) {
    vb_server_stop(&s);
    return rc;
  }
  if (s.sock) printf("nbd+unix:///?socket=%s\n", s.sock);
  else if (listen && strchr(listen, ':')) printf("nbd://[%s]:%d/\n", listen, port);
  else printf("nbd://%s:%d/\n", listen ? listen : "127.0.0.1", port);
  fflush(stdout);
  int st;
  while (!vm_interrupted() && waitpid(s.pid, &st, WNOHANG) == 0) vm_sleep_ms(200);
  bool died = !vm_interrupted();
  CLEANUP_FREE char *why = NULL;
  if (died) {
    s.pid = -1;
    why = nbdkit_last_line(&s); /* why: a lock it could not take, ... */
  }
  vb_server_stop(&s);
  return died ? vm_fail(VM_EXIT_FAIL, "nbdkit stopped%s%s", why ? ": " : "", why ? why : "") : 0;
}

/* ---- Inside the guest: libguestfs on the export -------------------------------------------- */

struct guest {
  struct vb_server srv;
  guestfs_h *g;
};

static int guest_open(const char *repo, const char *snap, const char *disk, struct guest *gu)
{
  memset(gu, 0, sizeof *gu);
  int rc = vb_server_start(repo, snap, disk, NULL, NULL, 0, &gu->srv);
  if (rc) return rc;
  gu->g = vm_gfs_open();
  if (!gu->g) return VM_EXIT_FAIL;
  CLEANUP_FREE char *server = vm_strdup_printf("unix:%s", gu->srv.sock);
  const char *servers[] = { server, NULL };
  if (guestfs_add_drive_opts(gu->g, "", GUESTFS_ADD_DRIVE_OPTS_FORMAT, "raw", GUESTFS_ADD_DRIVE_OPTS_READONLY, 1,
                             GUESTFS_ADD_DRIVE_OPTS_PROTOCOL, "nbd", GUESTFS_ADD_DRIVE_OPTS_SERVER, servers, -1) < 0)
    return vm_fail_gfs(gu->g, "cannot add the snapshot's disk");
  if (guestfs_launch(gu->g) < 0) return vm_fail_gfs(gu->g, "cannot look inside the snapshot");
  CLEANUP_FREE char *desc = vm_strdup_printf("snapshot %.12s", snap);
  return vm_gfs_mount_guest(gu->g, desc);
}

/* Closes the guest and the server; adds what was read to o. */
static void guest_close(struct guest *gu, json_object *o)
{
  if (gu->g) {
    guestfs_shutdown(gu->g);
    guestfs_close(gu->g);
    gu->g = NULL;
  }
  vb_server_stop(&gu->srv);
  if (o && gu->srv.chunk_size) {
    uint64_t bytes = gu->srv.chunks_read * gu->srv.chunk_size;
    json_object_object_add(o, "chunks_read", json_object_new_int64((int64_t)gu->srv.chunks_read));
    json_object_object_add(o, "bytes_read", json_object_new_int64((int64_t)bytes));
    json_object_object_add(o, "disk_size", json_object_new_int64((int64_t)gu->srv.disk_size));
    char pct[32];
    snprintf(pct, sizeof pct, "%.2f", gu->srv.disk_size ? 100.0 * (double)bytes / (double)gu->srv.disk_size : 0.0);
    json_object_object_add(o, "percent_of_disk", json_object_new_double_s(atof(pct), pct));
  }
}

static void say_read(json_object *o)
{
  json_object *c, *b, *p;
  if (!json_object_object_get_ex(o, "chunks_read", &c) || !json_object_object_get_ex(o, "bytes_read", &b) ||
      !json_object_object_get_ex(o, "percent_of_disk", &p))
    return;
  char sz[16];
  vm_info("read %lld chunks of the repository (%s, %s%% of the disk)", (long long)json_object_get_int64(c),
          vm_format_size((uint64_t)json_object_get_int64(b), sz), json_object_get_string(p));
}

static const char *file_type(int64_t mode)
{
  switch (mode & S_IFMT) {
  case S_IFDIR: return "dir";
  case S_IFREG: return "file";
  case S_IFLNK: return "link";
  case S_IFCHR: return "char";
  case S_IFBLK: return "block";
  case S_IFIFO: return "fifo";
  case S_IFSOCK: return "socket";
  default: return "?";
  }
}

int cmd_ls(int argc, char **argv)
{
  char *disk = NULL;
  struct poptOption table[] = {
    { "disk", '\0', POPT_ARG_STRING, &disk, 0, "the disk to look in (its target; default: the first)", "TARGET" },
    VB_POPT_REPO, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO SNAPSHOT [GUEST-PATH]",
                    "List a folder inside a snapshot's guest (default /): its file systems mounted read-only through "
                    "libguestfs on the snapshot served by nbdkit, reading only the chunks that the lookups touch.",
                    2, 3, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  vm_catch_signals();
  const char *path = nargs > 2 ? args[2] : "/";
  if (path[0] != '/') return vm_usage_error("a guest path starts with '/': '%s'", path);
  CLEANUP_FREE char *id = NULL;
  if ((rc = resolve_id(args[0], args[1], &id))) return rc;
  struct guest gu;
  CLEANUP_JSON json_object *rows = json_object_new_array();
  rc = guest_open(args[0], id, disk, &gu);
  if (!rc && guestfs_is_dir_opts(gu.g, path, GUESTFS_IS_DIR_OPTS_FOLLOWSYMLINKS, 1, -1) <= 0)
    rc = vm_fail(VM_EXIT_NOTFOUND, "no folder '%s' in snapshot %.12s", path, id);
  char **names = rc ? NULL : guestfs_ls(gu.g, path);
  if (!rc && !names) rc = vm_fail_gfs(gu.g, "cannot list '%s'", path);
  struct guestfs_statns_list *st = rc ? NULL : guestfs_lstatnslist(gu.g, path, names);
  if (!rc && !st) rc = vm_fail_gfs(gu.g, "cannot read '%s'", path);
  for (size_t i = 0; !rc && names[i] && i < st->len; i++) {
    json_object *o = json_object_new_object();
    char when[32] = "?";
    time_t t = (time_t)st->val[i].st_mtime_sec;
    struct tm tm;
    if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char mode[8];
    snprintf(mode, sizeof mode, "%04llo", (unsigned long long)(st->val[i].st_mode & 07777));
    json_object_object_add(o, "name", json_object_new_string(names[i]));
    json_object_object_add(o, "type", json_object_new_string(file_type(st->val[i].st_mode)));
    json_object_object_add(o, "mode", json_object_new_string(mode));
    json_object_object_add(o, "size", json_object_new_int64(st->val[i].st_size));
    json_object_object_add(o, "mtime", json_object_new_string(when));
    json_object_array_add(rows, o);
  }
  if (st) guestfs_free_statns_list(st);
  for (size_t i = 0; names && names[i]; i++) free(names[i]);
  free(names);
  json_object *stats = json_object_new_object();
  guest_close(&gu, stats);
  if (rc) {
    json_object_put(stats);
    return rc;
  }
  static const struct vm_column cols[] = {
    { "type", "TYPE", VM_COL_STR },   { "mode", "MODE", VM_COL_STR },   { "size", "SIZE", VM_COL_BYTES },
    { "mtime", "MODIFIED", VM_COL_STR }, { "name", "NAME", VM_COL_STR }, { NULL, NULL, 0 },
  };
  rc = vm_print_list(rows, cols);
  if (vm_opts.verbose) say_read(stats);
  json_object_put(stats);
  return rc;
}

int cmd_restore_file(int argc, char **argv)
{
  char *disk = NULL, *to = NULL;
  struct poptOption table[] = {
    { "to", '\0', POPT_ARG_STRING, &to, 0, "the folder to copy into (default: the current one)", "DIR" },
    { "disk", '\0', POPT_ARG_STRING, &disk, 0, "the disk to look in (its target; default: the first)", "TARGET" },
    VB_POPT_REPO, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO SNAPSHOT GUEST-PATH...",
                    "Copy files or folders (recursively) from inside a snapshot's guest into DIR, through libguestfs "
                    "on the snapshot served by nbdkit: only the chunks they touch are read and authenticated; says "
                    "how many. An existing file of the same name in DIR is not overwritten (exit 4), and a failed "
                    "restore leaves nothing.",
                    3, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  vm_catch_signals();
  const char *dir = to ? to : ".";
  struct stat sb;
  if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) return vm_fail(VM_EXIT_NOTFOUND, "no folder '%s'", dir);
  struct vm_strv names = { 0 };
  for (int i = 2; i < nargs; i++) {
    if (args[i][0] != '/') return vm_usage_error("a guest path starts with '/': '%s'", args[i]);
    CLEANUP_FREE char *copy = vm_strdup(args[i]);
    const char *base = basename(copy);
    if (!strcmp(base, "/") || !strcmp(base, ".") || !strcmp(base, ".."))
      return vm_usage_error("name a file or folder inside the guest, not '%s'", args[i]);
    if (vm_strv_contains(names.v, base)) {
      vm_strv_free(&names);
      return vm_usage_error("two guest paths end in '%s': they would land on one file; restore them apart", base);
    }
    vm_strv_add(&names, base);
    CLEANUP_FREE char *dst = vm_strdup_printf("%s/%s", dir, base);
    if (access(dst, F_OK) == 0) {
      vm_strv_free(&names);
      return vm_fail(VM_EXIT_STATE, "'%s' exists: restore into another folder", dst);
    }
  }
  vm_strv_free(&names);
  CLEANUP_FREE char *id = NULL;
  if ((rc = resolve_id(args[0], args[1], &id))) return rc;
  struct guest gu;
  struct vm_undo undo = { 0 };
  /* Nothing comes out readable by others while it is written. */
  umask(077);
  rc = guest_open(args[0], id, disk, &gu);
  for (int i = 2; i < nargs && !rc; i++) {
    if (guestfs_exists(gu.g, args[i]) <= 0) {
      rc = vm_fail(VM_EXIT_NOTFOUND, "no '%s' in snapshot %.12s", args[i], id);
      break;
    }
    CLEANUP_FREE char *copy = vm_strdup(args[i]);
    CLEANUP_FREE char *dst = vm_strdup_printf("%s/%s", dir, basename(copy));
    bool isdir = guestfs_is_dir_opts(gu.g, args[i], GUESTFS_IS_DIR_OPTS_FOLLOWSYMLINKS, 1, -1) > 0;
    if (isdir) vm_undo_local_dir(&undo, dst);
    else vm_undo_local_file(&undo, dst);
    if (guestfs_copy_out(gu.g, args[i], dir) < 0) rc = vm_fail_gfs(gu.g, "cannot copy '%s' out", args[i]);
    else {
      /* A file comes out with the guest's mode (a folder's files keep theirs):
       * never more readable here than in the guest. */
      struct guestfs_statns *gs = isdir ? NULL : guestfs_statns(gu.g, args[i]);
      if (gs) {
        chmod(dst, (mode_t)(gs->st_mode & 07777));
        guestfs_free_statns(gs);
      } else if (!isdir) {
        chmod(dst, 0600);
      }
      printf("%s\n", dst);
    }
    if (!rc && vm_interrupted()) rc = vm_fail_interrupted();
  }
  CLEANUP_JSON json_object *o = json_object_new_object();
  json_object_object_add(o, "snapshot", json_object_new_string(id));
  guest_close(&gu, o);
  if (rc) {
    vm_undo_run(&undo);
    return rc;
  }
  vm_undo_forget(&undo);
  say_read(o);
  return 0;
}
