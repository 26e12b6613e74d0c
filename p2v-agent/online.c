/* Online mode: the server keeps running while its disks are read. Each file
 * system mounted from a disk sent is found in /proc/self/mountinfo and placed in
 * the disk through /sys/dev/block (a partition's start, or the whole disk).
 *
 * What changed between two passes of a mounted ext2/3/4 file system is found
 * without a kernel module and without reading the used blocks again:
 *   - fanotify on the whole file system (FAN_MARK_FILESYSTEM, with file handles
 *     of the objects and their folders) names every file written and every inode
 *     and folder changed; its mark is set before pass 1 takes its map;
 *   - FIEMAP (synced) maps the files written to the disk's bytes;
 *   - GETFSMAP gives the free space (holes), so that what was allocated since
 *     the last pass is sent again too, and the file system's own metadata
 *     (superblocks, group descriptors, bitmaps) for the final pass.
 * The metadata of an inode (its inode-table bytes, extent tree, folder blocks)
 * is written in place by the journal's checkpoint, whenever that comes, so it
 * is read only in the final pass, under the freeze, which checkpoints the
 * journal: the inodes named by any event since the last checkpoint go again.
 * The journal is checkpointed once at the start too (a freeze of a few
 * milliseconds), so that what was changed before the mark is in place when
 * pass 1 reads it. Lost events (the queue overflowed) cost a checkpoint and a
 * pass of every used block of that file system.
 *
 * Other mounted file systems (XFS, vfat ...) are read whole (their used blocks)
 * in pass 1 and again in the final pass, frozen: without a reverse map of their
 * metadata, nothing less is sound. One that cannot be frozen is read as it is,
 * with a warning. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/fsmap.h>
#include <dirent.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "agent.h"

/* GETFSMAP's owners for the journal and the inode tables, as ext4 (and XFS)
 * define them (fs/ext4/fsmap.h): not in the kernel's uapi header. */
#define OWN_LOG FMR_OWNER('X', 2)
#define OWN_INODES FMR_OWNER('X', 5)

/* The watchdog thaws this long after --max-freeze when the agent has not. */
#define WATCHDOG_MARGIN_MS 2000

struct handle {
  uint64_t ino;
  struct file_handle *fh;
};

struct pa_fs {
  size_t disk;
  char *mnt, *src;
  char fstype[32];
  dev_t dev;
  uint64_t offset, size; /* in the disk */
  int mfd;               /* the mount point, for ioctls and open_by_handle_at */
  int fan;               /* fanotify, -1 when the file system is not tracked */
  bool ext;              /* ext2/3/4: tracked */
  bool have_fsmap;       /* GETFSMAP works on it */
  bool freezable, frozen;
  bool unfreezable_said;
  bool lost;             /* events were lost: a checkpoint and a full pass next */
  bool mapped;           /* pa_online_map has read free once */
  bool pending;          /* free was read by a map that no pa_online_changes used yet */
  struct handle *mod;    /* files written since the last pass */
  size_t nmod, capmod;
  struct pa_ino *inos;   /* inodes named since the last checkpoint */
  size_t ninos, capinos;
  struct pa_ranges free, prev_free; /* GETFSMAP's free space now and at the last pass */
  struct pa_ranges special;         /* its own metadata (superblocks, descriptors, bitmaps) */
};

struct pa_online {
  bool frozen;            /* nothing is said on stderr then: it may be a file on a frozen file system */
  const struct pa_disk *disks;
  size_t ndisks;
  struct pa_fs *fs;
  size_t nfs;
  struct pa_online_opts o;
  pid_t watchdog;
  int wd_pipe;
  int64_t t_freeze;
  bool broken;            /* the freeze did not hold: what was read since is not consistent */
  char broken_why[4200];  /* said once thawed ("" when the watchdog says it) */
};

/* ---- Where the mounted file systems are ---------------------------------------------- */

/* A number read from a sysfs file, or -1. */
static int64_t sysfs_num(const char *path)
{
  CLEANUP_FREE char *s = vm_read_file(path, 4096, NULL);
  if (!s) return -1;
  uint64_t v;
  s[strcspn(s, "\n")] = 0;
  return vm_parse_uint(s, 0, INT64_MAX, &v) ? -1 : (int64_t)v;
}

/* The whole disk (its dev_t) and the byte offset in it of block device maj:min. */
static int whole_disk_of(unsigned maj, unsigned min, dev_t *disk, uint64_t *start, uint64_t *size)
{
  char p[128];
  snprintf(p, sizeof p, "/sys/dev/block/%u:%u/partition", maj, min);
  if (access(p, F_OK) != 0) {
    *disk = makedev(maj, min);
    *start = 0;
    snprintf(p, sizeof p, "/sys/dev/block/%u:%u/size", maj, min);
    int64_t sz = sysfs_num(p);
    *size = sz > 0 ? (uint64_t)sz * 512 : 0;
    return 0;
  }
  snprintf(p, sizeof p, "/sys/dev/block/%u:%u/start", maj, min);
  int64_t st = sysfs_num(p);
  snprintf(p, sizeof p, "/sys/dev/block/%u:%u/size", maj, min);
  int64_t sz = sysfs_num(p);
  /* The parent: the folder above the partition's in sysfs, with its dev file. */
  snprintf(p, sizeof p, "/sys/dev/block/%u:%u/../dev", maj, min);
  CLEANUP_FREE char *d = vm_read_file(p, 4096, NULL);
  unsigned pm, pn;
  if (st < 0 || sz < 0 || !d || sscanf(d, "%u:%u", &pm, &pn) != 2) return -1;
  *disk = makedev(pm, pn);
  *start = (uint64_t)st * 512;
  *size = (uint64_t)sz * 512;
  return 0;
}

/* mountinfo escapes spaces and the like as \ooo. */
static void unescape(char *s)
{
  char *o = s;
  for (char *i = s; *i; i++) {
    if (i[0] == '\\' && i[1] >= '0' && i[1] <= '3' && i[2] >= '0' && i[2] <= '7' && i[3] >= '0' && i[3] <= '7') {
      *o++ = (char)((i[1] - '0') * 64 + (i[2] - '0') * 8 + (i[3] - '0'));
      i += 3;
    } else {
      *o++ = *i;
    }
  }
  *o = 0;
}

static void add_mount(struct pa_online *on, size_t disk, dev_t dev, int mfd, const char *mnt, const char *type,
                      const char *src, uint64_t start, uint64_t size)
{
  on->fs = realloc(on->fs, (on->nfs + 1) * sizeof *on->fs);
  if (!on->fs) abort();
  struct pa_fs *f = &on->fs[on->nfs++];
  memset(f, 0, sizeof *f);
  f->disk = disk;
  f->mnt = vm_strdup(mnt);
  f->src = vm_strdup(src);
  snprintf(f->fstype, sizeof f->fstype, "%s", type);
  f->dev = dev;
  f->offset = start;
  f->size = size;
  f->mfd = mfd;
  f->fan = -1;
  f->ext = !strcmp(type, "ext2") || !strcmp(type, "ext3") || !strcmp(type, "ext4");
}

/* Where block device rdev lies among the disks sent: at 0 of the one it is (a
 * partition or a volume given as --disk), or at its start in the one it is a
 * partition of. */
static bool place(const struct pa_online *on, const dev_t *ddev, dev_t rdev, size_t *disk, uint64_t *start,
                  uint64_t *size)
{
  for (size_t i = 0; i < on->ndisks; i++)
    if (ddev[i] && ddev[i] == rdev) {
      *disk = i;
      *start = 0;
      *size = on->disks[i].size;
      return true;
    }
  dev_t whole;
  if (whole_disk_of(major(rdev), minor(rdev), &whole, start, size) != 0) return false;
  for (size_t i = 0; i < on->ndisks; i++)
    if (ddev[i] && ddev[i] == whole) {
      *disk = i;
      return true;
    }
  return false;
}

/* The mount point of mount id, open, or -1 when that path does not reach that
 * mount: a mount on top of it (or of a folder above it) hides it, and GETFSMAP
 * or FIFREEZE through it would act on another file system. The mount's ID, not
 * st_dev, tells: a btrfs subvolume's st_dev is not the one mountinfo names. */
static int open_mount(const char *mnt, unsigned id)
{
  int fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct statx sx;
  if (fd >= 0 && (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &sx) != 0 || !(sx.stx_mask & STATX_MNT_ID) ||
                  sx.stx_mnt_id != id)) {
    close(fd);
    fd = -1;
  }
  return fd;
}

static int find_mounts(struct pa_online *on)
{
  CLEANUP_FCLOSE FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) return vm_fail_errno(VM_EXIT_FAIL, "cannot read /proc/self/mountinfo");
  dev_t *ddev = calloc(on->ndisks ? on->ndisks : 1, sizeof *ddev);
  if (!ddev) abort();
  for (size_t i = 0; i < on->ndisks; i++) {
    struct stat st;
    if (stat(on->disks[i].path, &st) == 0 && S_ISBLK(st.st_mode)) ddev[i] = st.st_rdev;
  }
  /* File systems of the disks with a mount point that does not reach them:
   * an error at the end unless another one does. */
  struct {
    dev_t dev;
    char *mnt;
  } *hid = NULL;
  size_t nhid = 0;
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS */
    unsigned id, maj, min;
    char root[4096], mnt[4096];
    if (sscanf(line, "%u %*u %u:%u %4095s %4095s", &id, &maj, &min, root, mnt) != 5) continue;
    char *sep = strstr(line, " - ");
    if (!sep) continue;
    char type[32], src[4096];
    if (sscanf(sep + 3, "%31s %4095s", type, src) != 2) continue;
    unescape(mnt);
    unescape(src);
    dev_t dev = makedev(maj, min);
    bool known = false;
    for (size_t i = 0; i < on->nfs && !known; i++) known = on->fs[i].dev == dev; /* a bind mount, or mounted twice */
    if (known) continue;
    size_t disk;
    uint64_t start, size;
    bool ours = place(on, ddev, dev, &disk, &start, &size);
    /* btrfs names an anonymous device in mountinfo, not its block device: its
     * source does. Only a /dev path is looked at (a FUSE source may hang). */
    struct stat st;
    if (!ours && !strncmp(src, "/dev/", 5) && stat(src, &st) == 0 && S_ISBLK(st.st_mode))
      ours = place(on, ddev, st.st_rdev, &disk, &start, &size);
    if (!ours) continue;
    int mfd = open_mount(mnt, id);
    if (mfd < 0) {
      hid = realloc(hid, (nhid + 1) * sizeof *hid);
      if (!hid) abort();
      hid[nhid].dev = dev;
      hid[nhid++].mnt = vm_strdup(mnt);
      continue;
    }
    add_mount(on, disk, dev, mfd, mnt, type, src, start, size);
  }
  free(line);
  free(ddev);
  int rc = 0;
  for (size_t k = 0; k < nhid; k++) {
    bool reached = false;
    for (size_t i = 0; i < on->nfs && !reached; i++) reached = on->fs[i].dev == hid[k].dev;
    /* Neither followed nor frozen, it would arrive inconsistent. */
    if (!reached && !rc)
      rc = vm_fail(VM_EXIT_FAIL, "cannot reach the file system mounted on '%s': a mount on top hides it (or it is "
                   "not a folder)", hid[k].mnt);
    free(hid[k].mnt);
  }
  free(hid);
  return rc;
}

/* True when a device-mapper or MD device stands on the sysfs block folder dir
 * (its holders/ is not empty). */
static bool has_holders(const char *dir)
{
  CLEANUP_FREE char *h = vm_strdup_printf("%s/holders", dir);
  DIR *d = opendir(h);
  if (!d) return false;
  bool any = false;
  struct dirent *e;
  while (!any && (e = readdir(d)))
    if (e->d_name[0] != '.') any = true;
  closedir(d);
  return any;
}

/* Online mode follows file systems mounted from the disk or its partitions
 * only: one on LVM, MD or dm-crypt above them is read as it is, which a
 * running server makes inconsistent. Said, not refused. */
static void warn_stacked(const struct pa_disk *d)
{
  struct stat st;
  if (stat(d->path, &st) != 0 || !S_ISBLK(st.st_mode)) return;
  CLEANUP_FREE char *dir = vm_strdup_printf("/sys/dev/block/%u:%u", major(st.st_rdev), minor(st.st_rdev));
  bool stacked = has_holders(dir);
  DIR *sd = opendir(dir);
  struct dirent *e;
  while (sd && !stacked && (e = readdir(sd))) {
    if (e->d_name[0] == '.') continue;
    CLEANUP_FREE char *part = vm_strdup_printf("%s/%s/partition", dir, e->d_name);
    if (access(part, F_OK) != 0) continue;
    CLEANUP_FREE char *pd = vm_strdup_printf("%s/%s", dir, e->d_name);
    stacked = has_holders(pd);
  }
  if (sd) closedir(sd);
  if (stacked)
    vm_warn("%s holds LVM, MD or device-mapper volumes: their file systems are read as they are, not followed "
            "(stop their writers, or mount them read-only)", d->path);
}

/* ---- fanotify ------------------------------------------------------------------------- */

#define FAN_EVENTS                                                                                                    \
  (FAN_MODIFY | FAN_CLOSE_WRITE | FAN_ATTRIB | FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO |             \
   FAN_DELETE_SELF | FAN_MOVE_SELF | FAN_ONDIR)

/* Sets up fanotify on a mounted ext file system. */
static int track(struct pa_fs *f)
{
  f->fan = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME_TARGET,
                         O_RDONLY | O_LARGEFILE | O_CLOEXEC);
  if (f->fan < 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot watch '%s' with fanotify%s", f->mnt,
                         errno == EINVAL ? " (online mode needs Linux 5.17 or later)" : "");
  if (fanotify_mark(f->fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_EVENTS, AT_FDCWD, f->mnt) != 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot watch '%s' with fanotify", f->mnt);
  return 0;
}

static int cmp_handle(const void *a, const void *b)
{
  const struct handle *x = a, *y = b;
  return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static int cmp_ino(const void *a, const void *b)
{
  const struct pa_ino *x = a, *y = b;
  if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
  return (int)x->dir - (int)y->dir;
}

/* Each inode once, sorted: a busy server names the same ones over and over. */
static void unique_inos(struct pa_fs *f)
{
  if (f->ninos) qsort(f->inos, f->ninos, sizeof *f->inos, cmp_ino);
  size_t k = 0;
  for (size_t j = 0; j < f->ninos; j++)
    if (!k || f->inos[j].ino != f->inos[k - 1].ino || f->inos[j].dir != f->inos[k - 1].dir) f->inos[k++] = f->inos[j];
  f->ninos = k;
}

static void unique_mods(struct pa_fs *f)
{
  if (f->nmod) qsort(f->mod, f->nmod, sizeof *f->mod, cmp_handle);
  size_t k = 0;
  for (size_t j = 0; j < f->nmod; j++) {
    if (k && f->mod[j].ino == f->mod[k - 1].ino) free(f->mod[j].fh);
    else f->mod[k++] = f->mod[j];
  }
  f->nmod = k;
}

static void note_ino(struct pa_fs *f, uint64_t ino, bool dir)
{
  if (f->ninos && f->inos[f->ninos - 1].ino == ino && f->inos[f->ninos - 1].dir == dir) return;
  if (f->ninos == f->capinos) unique_inos(f);
  if (f->ninos * 4 >= f->capinos * 3) {
    f->capinos = f->capinos ? f->capinos * 2 : 256;
    f->inos = realloc(f->inos, f->capinos * sizeof *f->inos);
    if (!f->inos) abort();
  }
  f->inos[f->ninos++] = (struct pa_ino){ ino, dir };
}

static void note_mod(struct pa_fs *f, uint64_t ino, const struct file_handle *fh)
{
  if (f->nmod && f->mod[f->nmod - 1].ino == ino) return;
  if (f->nmod == f->capmod) unique_mods(f);
  if (f->nmod * 4 >= f->capmod * 3) {
    f->capmod = f->capmod ? f->capmod * 2 : 256;
    f->mod = realloc(f->mod, f->capmod * sizeof *f->mod);
    if (!f->mod) abort();
  }
  size_t len = sizeof *fh + fh->handle_bytes;
  struct file_handle *c = malloc(len);
  if (!c) abort();
  memcpy(c, fh, len);
  f->mod[f->nmod++] = (struct handle){ ino, c };
}

/* The inode number in an ext file handle (FILEID_INO32_GEN and its _PARENT
 * form: a 32-bit inode number first), 0 when it is not one. */
static uint64_t handle_ino(const struct file_handle *fh)
{
  if ((fh->handle_type != 1 && fh->handle_type != 2) || fh->handle_bytes < 8) return 0;
  uint32_t ino;
  memcpy(&ino, fh->f_handle, 4);
  return ino;
}

static void drain(struct pa_fs *f)
{
  if (f->fan < 0) return;
  /* Aligned for the event structures. */
  static __thread uint64_t buf[8192];
  for (;;) {
    ssize_t r = read(f->fan, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
    for (; FAN_EVENT_OK(m, r); m = FAN_EVENT_NEXT(m, r)) {
      if (m->vers != FANOTIFY_METADATA_VERSION || (m->mask & FAN_Q_OVERFLOW)) {
        f->lost = true;
        continue;
      }
      if (m->fd >= 0) close(m->fd);
      char *p = (char *)(m + 1), *end = (char *)m + m->event_len;
      while (p + sizeof(struct fanotify_event_info_header) <= end) {
        struct fanotify_event_info_header *h = (struct fanotify_event_info_header *)p;
        if (h->len < sizeof *h || p + h->len > end) break;
        if ((h->info_type == FAN_EVENT_INFO_TYPE_FID || h->info_type == FAN_EVENT_INFO_TYPE_DFID ||
             h->info_type == FAN_EVENT_INFO_TYPE_DFID_NAME) &&
            h->len >= sizeof(struct fanotify_event_info_fid) + sizeof(struct file_handle)) {
          struct fanotify_event_info_fid *fid = (struct fanotify_event_info_fid *)p;
          struct file_handle *fh = (struct file_handle *)fid->handle;
          if (sizeof *fid + sizeof *fh + fh->handle_bytes <= h->len) {
            bool dir = h->info_type != FAN_EVENT_INFO_TYPE_FID || (m->mask & FAN_ONDIR);
            uint64_t ino = handle_ino(fh);
            if (!ino) {
              f->lost = true; /* not an ext handle: cannot be followed */
            } else {
              note_ino(f, ino, dir);
              if (!dir && h->info_type == FAN_EVENT_INFO_TYPE_FID && (m->mask & (FAN_MODIFY | FAN_CLOSE_WRITE)))
                note_mod(f, ino, fh);
            }
          }
        }
        p += h->len;
      }
    }
  }
}

void pa_online_poll(struct pa_online *on)
{
  if (!on) return;
  for (size_t i = 0; i < on->nfs; i++) drain(&on->fs[i]);
}

/* ---- GETFSMAP and FIEMAP ---------------------------------------------------------------- */

/* Reads the file system's space map: free ranges into f->free, its own metadata
 * (superblocks, group descriptors, bitmaps; not the log, not the inode tables)
 * into f->special, both as disk offsets. -1 with errno when GETFSMAP fails. */
static int read_fsmap(struct pa_fs *f)
{
  enum { N = 512 };
  struct fsmap_head *h = calloc(1, fsmap_sizeof(N));
  if (!h) abort();
  f->free.n = 0;
  f->special.n = 0;
  h->fmh_count = N;
  h->fmh_keys[1].fmr_device = UINT_MAX;
  h->fmh_keys[1].fmr_physical = UINT64_MAX;
  h->fmh_keys[1].fmr_owner = UINT64_MAX;
  h->fmh_keys[1].fmr_offset = UINT64_MAX;
  h->fmh_keys[1].fmr_flags = UINT_MAX;
  int rc = 0;
  for (;;) {
    if (ioctl(f->mfd, FS_IOC_GETFSMAP, h) != 0) {
      rc = -1;
      break;
    }
    if (h->fmh_entries == 0) break;
    for (unsigned i = 0; i < h->fmh_entries; i++) {
      const struct fsmap *r = &h->fmh_recs[i];
      uint64_t a = f->offset + r->fmr_physical, b = a + r->fmr_length;
      if (b > f->offset + f->size) b = f->offset + f->size;
      if (r->fmr_owner == FMR_OWN_FREE)
        pa_ranges_add(&f->free, a, b);
      else if ((r->fmr_flags & FMR_OF_SPECIAL_OWNER) && r->fmr_owner != FMR_OWN_UNKNOWN &&
               r->fmr_owner != OWN_LOG && r->fmr_owner != OWN_INODES)
        pa_ranges_add(&f->special, a, b);
    }
    if (h->fmh_recs[h->fmh_entries - 1].fmr_flags & FMR_OF_LAST) break;
    fsmap_advance(h);
  }
  free(h);
  return rc;
}

/* Adds the disk ranges of a file's extents (FIEMAP, its dirty pages written
 * first). -1 when the file cannot be mapped. */
static int file_extents(struct pa_fs *f, int fd, struct pa_ranges *out)
{
  enum { N = 256 };
  struct fiemap *fm = calloc(1, sizeof *fm + N * sizeof(struct fiemap_extent));
  if (!fm) abort();
  uint64_t start = 0;
  int rc = 0;
  for (;;) {
    fm->fm_start = start;
    fm->fm_length = FIEMAP_MAX_OFFSET - start;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = N;
    fm->fm_mapped_extents = 0;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) != 0) {
      rc = -1;
      break;
    }
    if (fm->fm_mapped_extents == 0) break;
    bool last = false;
    for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
      const struct fiemap_extent *e = &fm->fm_extents[i];
      /* A delayed allocation (written after FIEMAP's sync) has no place yet:
       * its write's event comes after this drain, and its blocks will be
       * allocated since this pass. Taking it for a lost event would cost a
       * pass of every used block each time a busy file is appended to. */
      if ((e->fe_flags & FIEMAP_EXTENT_UNKNOWN) && !(e->fe_flags & FIEMAP_EXTENT_DELALLOC)) rc = -1;
      /* Data inside the inode lives in the inode table: the inode is named. */
      if (!(e->fe_flags & (FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_UNKNOWN)))
        pa_ranges_add(out, f->offset + e->fe_physical, f->offset + e->fe_physical + e->fe_length);
      if (e->fe_flags & FIEMAP_EXTENT_LAST) last = true;
      start = e->fe_logical + e->fe_length;
    }
    if (last) break;
  }
  free(fm);
  return rc;
}

static void free_mods(struct pa_fs *f)
{
  for (size_t i = 0; i < f->nmod; i++) free(f->mod[i].fh);
  f->nmod = 0;
}

/* The files written since the last pass, mapped; they are forgotten then (a
 * later write names them again). */
static void mods_extents(struct pa_fs *f, struct pa_ranges *out, bool quiet)
{
  unique_mods(f);
  for (size_t i = 0; i < f->nmod; i++) {
    int fd = open_by_handle_at(f->mfd, f->mod[i].fh, O_RDONLY | O_NOATIME | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) continue; /* deleted since: its blocks are free */
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && file_extents(f, fd, out) != 0) {
      if (!quiet)
        vm_debug("%s: cannot map inode %llu with FIEMAP: every used block goes again", f->mnt,
                 (unsigned long long)f->mod[i].ino);
      f->lost = true;
    }
    close(fd);
  }
  free_mods(f);
}

/* ---- Setup ---------------------------------------------------------------------------- */

static int checkpoint(struct pa_online *on, struct pa_fs *only);

int pa_online_open(const struct pa_disk *disks, size_t n, const struct pa_online_opts *o, struct pa_online **out)
{
  *out = NULL;
  struct pa_online *on = calloc(1, sizeof *on);
  if (!on) abort();
  on->disks = disks;
  on->ndisks = n;
  on->o = *o;
  on->watchdog = -1;
  on->wd_pipe = -1;
  for (size_t i = 0; i < n; i++) warn_stacked(&disks[i]);
  int rc = find_mounts(on);
  for (size_t i = 0; i < on->nfs && !rc; i++) {
    struct pa_fs *f = &on->fs[i];
    f->have_fsmap = read_fsmap(f) == 0;
    if (f->ext && !f->have_fsmap) {
      vm_warn("%s (%s): no GETFSMAP: read whole in the final pass", f->mnt, f->fstype);
      f->ext = false;
    }
    if (f->ext) rc = track(f);
    f->freezable = true;
    vm_info("%s: %s (%s) at offset %llu of %s: %s", f->mnt, f->src, f->fstype, (unsigned long long)f->offset,
            disks[f->disk].name,
            f->ext ? "delta passes, then a frozen final pass" : "read again whole (used blocks) in the frozen final pass");
  }
  if (!rc && on->nfs == 0) {
    vm_info("no file system of %s mounted: one pass, as offline", n == 1 ? disks[0].path : "these disks");
    pa_online_close(on);
    return 0;
  }
  /* What was changed before the marks is put in place now. */
  if (!rc) rc = checkpoint(on, NULL);
  if (rc) {
    pa_online_close(on);
    return rc;
  }
  *out = on;
  return 0;
}

void pa_online_close(struct pa_online *on)
{
  if (!on) return;
  int64_t ms;
  pa_online_thaw(on, &ms);
  for (size_t i = 0; i < on->nfs; i++) {
    struct pa_fs *f = &on->fs[i];
    free_mods(f);
    free(f->mod);
    free(f->inos);
    pa_ranges_free(&f->free);
    pa_ranges_free(&f->prev_free);
    pa_ranges_free(&f->special);
    if (f->fan >= 0) close(f->fan);
    if (f->mfd >= 0) close(f->mfd);
    free(f->mnt);
    free(f->src);
  }
  free(on->fs);
  free(on);
}

bool pa_online_has_disk(const struct pa_online *on, size_t disk)
{
  for (size_t i = 0; on && i < on->nfs; i++)
    if (on->fs[i].disk == disk) return true;
  return false;
}

/* ---- Maps and changes ------------------------------------------------------------------- */

int pa_online_map(struct pa_online *on, size_t disk, struct pa_map *m)
{
  for (size_t i = 0; i < on->nfs; i++) {
    struct pa_fs *f = &on->fs[i];
    if (f->disk != disk || !f->have_fsmap) continue;
    /* The previous pass's free space is kept: what was allocated since goes
     * again. A map whose changes were not taken (the one before the freeze when
     * the last pass allowed comes) does not replace it: what was allocated
     * between the last pass sent and that map would be sent by no pass. */
    if (!f->pending) {
      struct pa_ranges t = f->prev_free;
      f->prev_free = f->free;
      f->free = t;
    }
    f->pending = f->mapped;
    f->mapped = true;
    if (read_fsmap(f) != 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot read the space map of '%s' (GETFSMAP)", f->mnt);
    /* Its range of the disk: what libext2fs read from the bitmaps on disk gives
     * way to what the mounted file system says. */
    struct pa_range *old = m->free;
    size_t nold = m->nfree;
    m->free = NULL;
    m->nfree = m->capfree = 0;
    for (size_t j = 0; j < nold; j++) {
      struct pa_range r = old[j];
      if (r.start < f->offset) pa_map_add_free(m, r.start, r.end < f->offset ? r.end : f->offset, r.reason);
      if (r.end > f->offset + f->size)
        pa_map_add_free(m, r.start > f->offset + f->size ? r.start : f->offset + f->size, r.end, r.reason);
    }
    free(old);
    for (size_t j = 0; j < f->free.n; j++) pa_map_add_free(m, f->free.v[j].start, f->free.v[j].end, VM_HOLE_FREE);
    char h1[16], h2[16];
    uint64_t nf = 0;
    for (size_t j = 0; j < f->free.n; j++) nf += f->free.v[j].end - f->free.v[j].start;
    if (!on->frozen) vm_debug("%s: %s of %s free by GETFSMAP", f->mnt, vm_format_size(nf, h1), vm_format_size(f->size, h2));
  }
  pa_map_merge(m);
  return 0;
}

/* Adds to out the ranges of a that are not in b (both sorted, disjoint). */
static void ranges_minus(const struct pa_ranges *a, const struct pa_ranges *b, struct pa_ranges *out)
{
  size_t j = 0;
  for (size_t i = 0; i < a->n; i++) {
    uint64_t s = a->v[i].start, e = a->v[i].end;
    while (j < b->n && b->v[j].end <= s) j++;
    size_t k = j;
    while (s < e) {
      if (k >= b->n || b->v[k].start >= e) {
        pa_ranges_add(out, s, e);
        break;
      }
      if (b->v[k].start > s) pa_ranges_add(out, s, b->v[k].start);
      s = b->v[k].end;
      k++;
    }
  }
}

/* Every used byte of a file system: its range less its free space. */
static void all_used(const struct pa_fs *f, struct pa_ranges *out)
{
  struct pa_ranges whole = { 0 };
  pa_ranges_add(&whole, f->offset, f->offset + f->size);
  if (f->have_fsmap) ranges_minus(&whole, &f->free, out);
  else pa_ranges_add(out, f->offset, f->offset + f->size);
  pa_ranges_free(&whole);
}

int pa_online_changes(struct pa_online *on, size_t disk, bool final, struct pa_ranges *out)
{
  int rc = 0;
  for (size_t i = 0; i < on->nfs && !rc; i++) {
    struct pa_fs *f = &on->fs[i];
    if (f->disk != disk) continue;
    f->pending = false;
    if (!f->ext) {
      if (final) all_used(f, out);
      continue;
    }
    drain(f);
    if (f->lost && !final) {
      /* Events were lost: the journal checkpointed, then every used block. */
      vm_info("%s: file system events were lost: every used block goes again", f->mnt);
      if ((rc = checkpoint(on, f))) break;
      drain(f);
      free_mods(f);
      f->ninos = 0;
      f->lost = false;
      all_used(f, out);
      continue;
    }
    if (f->lost) {
      /* Lost while frozen, or on the way to the freeze: all of it, frozen. */
      all_used(f, out);
      continue;
    }
    mods_extents(f, out, on->frozen);
    /* Allocated since the last pass: what the events did not name (a new
     * extent-tree block, a file written through mmap) goes too. */
    ranges_minus(&f->prev_free, &f->free, out);
    if (final) {
      for (size_t j = 0; j < f->special.n; j++) pa_ranges_add(out, f->special.v[j].start, f->special.v[j].end);
      unique_inos(f);
      if (pa_ext_named(on->disks[disk].path, f->offset, f->inos, f->ninos, out) != 0) all_used(f, out);
    }
  }
  return rc;
}

/* ---- Freeze, thaw and the watchdog -------------------------------------------------------- */

static volatile sig_atomic_t wd_parent_died;
static void wd_on_parent_death(int sig) { wd_parent_died = 1; }

/* The watchdog: a child in its own session that thaws every file system when
 * the agent dies (its end of the pipe closes, however it dies; or the parent-
 * death signal), or when the freeze outlives --max-freeze and a margin. It only
 * uses async-signal-safe calls: the agent has threads. */
static void watchdog_main(struct pa_online *on, const struct pa_fs *only, int rfd, pid_t parent, int64_t deadline_ms,
                          const char *msg_died, const char *msg_late)
{
  setsid();
  /* Not the OOM killer's choice when the agent holds the final pass in memory;
   * not matched by 'pkill p2v-agent' or 'killall p2v-agent' either. */
  int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (oom >= 0) {
    (void)!write(oom, "-1000", 5);
    close(oom);
  }
  prctl(PR_SET_NAME, "p2v-watchdog");
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, SIG_IGN);
  struct sigaction sa = { .sa_handler = wd_on_parent_death };
  sigaction(SIGUSR1, &sa, NULL);
  prctl(PR_SET_PDEATHSIG, SIGUSR1);
  /* Not the stream: the reader must see its end when the agent dies. */
  int nul = open("/dev/null", O_RDWR);
  if (nul >= 0) dup2(nul, STDOUT_FILENO);
  const char *why = NULL;
  if (getppid() != parent) why = msg_died;
  while (!why) {
    struct pollfd p = { .fd = rfd, .events = POLLIN };
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, left = deadline_ms - now;
    if (left <= 0) {
      why = msg_late;
      break;
    }
    int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (wd_parent_died) {
      why = msg_died;
    } else if (r > 0) {
      char c;
      ssize_t k = read(rfd, &c, 1);
      if (k == 1 && c == 'T') _exit(0); /* the agent thawed them itself */
      if (k == 0 || (k < 0 && errno != EINTR)) why = msg_died;
    } else if (r < 0 && errno != EINTR) {
      why = msg_died;
    }
  }
  /* Only what the agent may have frozen: another file system may be frozen by
   * someone else while the agent checkpoints one. */
  for (size_t i = 0; i < on->nfs; i++)
    if (on->fs[i].mfd >= 0 && on->fs[i].freezable && (!only || &on->fs[i] == only)) ioctl(on->fs[i].mfd, FITHAW, 0);
  (void)!write(STDERR_FILENO, why, strlen(why));
  _exit(1);
}

static int64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int start_watchdog(struct pa_online *on, const struct pa_fs *only, int64_t max_ms)
{
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot make the watchdog's pipe");
  char died[256], late[256];
  snprintf(died, sizeof died, "%s: watchdog: the agent died during the freeze: file systems thawed\n", vm_progname);
  snprintf(late, sizeof late, "%s: watchdog: the freeze lasted past --max-freeze: file systems thawed\n",
           vm_progname);
  int64_t deadline = mono_ms() + max_ms + WATCHDOG_MARGIN_MS;
  pid_t parent = getpid();
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return vm_fail_errno(VM_EXIT_FAIL, "cannot start the freeze's watchdog");
  }
  if (pid == 0) {
    close(p[1]);
    watchdog_main(on, only, p[0], parent, deadline, died, late);
  }
  close(p[0]);
  on->watchdog = pid;
  on->wd_pipe = p[1];
  return 0;
}

/* Also when the watchdog has ended already (pa_online_frozen_ms reaped it):
 * its pipe is closed all the same. */
static void stop_watchdog(struct pa_online *on)
{
  if (on->wd_pipe >= 0) {
    if (on->watchdog > 0) (void)!write(on->wd_pipe, "T", 1);
    close(on->wd_pipe);
    on->wd_pipe = -1;
  }
  if (on->watchdog <= 0) return;
  while (waitpid(on->watchdog, NULL, 0) < 0 && errno == EINTR) {}
  on->watchdog = -1;
}

/* Freezes the file systems (only one when only is set), under a new watchdog. */
static int freeze_all(struct pa_online *on, struct pa_fs *only, int64_t max_ms)
{
  int rc = start_watchdog(on, only, max_ms);
  if (rc) return rc;
  on->t_freeze = vm_now_ms();
  on->frozen = true;
  on->broken = false;
  for (size_t i = 0; i < on->nfs; i++) {
    struct pa_fs *f = &on->fs[i];
    if ((only && f != only) || !f->freezable) continue;
    if (ioctl(f->mfd, FIFREEZE, 0) == 0) {
      f->frozen = true;
    } else if (errno == EOPNOTSUPP || errno == ENOTTY) {
      /* Said once thawed. */
      f->freezable = false;
    } else {
      /* Thawed before it is said: stderr may be a file on one frozen already.
       * Frozen by someone else (another agent, fsfreeze): a conflict. */
      int e = errno;
      int64_t ms;
      pa_online_thaw(on, &ms);
      errno = e;
      return e == EBUSY ? vm_fail(VM_EXIT_STATE, "cannot freeze '%s': it is frozen already (another p2v-agent, or "
                                  "fsfreeze?)", f->mnt)
                        : vm_fail_errno(VM_EXIT_FAIL, "cannot freeze '%s'", f->mnt);
    }
  }
  return 0;
}

/* A freeze and a thaw at once: ext4 checkpoints its journal when it freezes,
 * so that what is in place on disk is current. */
static int checkpoint(struct pa_online *on, struct pa_fs *only)
{
  for (size_t i = 0; i < on->nfs; i++) syncfs(on->fs[i].mfd);
  int rc = freeze_all(on, only, on->o.max_freeze_ms);
  if (rc) return rc;
  int64_t ms;
  pa_online_thaw(on, &ms);
  vm_debug("journals checkpointed (frozen %lld ms)", (long long)ms);
  return 0;
}

int pa_online_freeze(struct pa_online *on)
{
  for (size_t i = 0; i < on->nfs; i++) syncfs(on->fs[i].mfd);
  return freeze_all(on, NULL, on->o.max_freeze_ms);
}

/* Past any --max-freeze when the freeze did not hold, so that the final pass
 * fails: the watchdog thawed (it ends only once it has, or once told to), or a
 * file system was thawed by another process (fsfreeze -u, another agent's
 * watchdog), which FITHAW's EINVAL alone would tell only after the blocks are
 * taken. FIFREEZE tells without thawing: EBUSY while it holds; one that
 * succeeds was thawed, and is thawed again at once (the watchdog, alive, covers
 * that instant). */
int64_t pa_online_frozen_ms(struct pa_online *on)
{
  if (on->frozen && !on->broken && on->watchdog > 0 && waitpid(on->watchdog, NULL, WNOHANG) == on->watchdog) {
    on->watchdog = -1;
    on->broken = true;
    on->broken_why[0] = 0;
  }
  for (size_t i = 0; on->frozen && !on->broken && i < on->nfs; i++) {
    struct pa_fs *f = &on->fs[i];
    if (!f->frozen || ioctl(f->mfd, FIFREEZE, 0) != 0) continue;
    ioctl(f->mfd, FITHAW, 0);
    f->frozen = false;
    on->broken = true;
    snprintf(on->broken_why, sizeof on->broken_why,
             "'%s' was thawed by another process during the final pass: what was read then is not consistent", f->mnt);
  }
  return on->broken ? INT64_MAX / 2 : vm_now_ms() - on->t_freeze;
}

void pa_online_thaw(struct pa_online *on, int64_t *ms)
{
  bool any = false;
  for (size_t i = 0; i < on->nfs; i++) {
    struct pa_fs *f = &on->fs[i];
    if (!f->frozen) continue;
    int e = ioctl(f->mfd, FITHAW, 0) != 0 && errno != EINVAL ? errno : 0;
    f->frozen = false;
    if (e) vm_warn("cannot thaw '%s': %s", f->mnt, strerror(e));
    any = true;
  }
  *ms = any ? vm_now_ms() - on->t_freeze : 0;
  stop_watchdog(on);
  on->frozen = false;
  if (on->broken && on->broken_why[0]) vm_warn("%s", on->broken_why);
  on->broken = false;
  for (size_t i = 0; i < on->nfs; i++) {
    struct pa_fs *f = &on->fs[i];
    if (!f->freezable && !f->unfreezable_said) {
      vm_warn("%s (%s) cannot be frozen: it is read as it is", f->mnt, f->fstype);
      f->unfreezable_said = true;
    }
  }
}
