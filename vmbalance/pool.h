/* The pool as it is now: every host of the hosts file sampled at once (one thread
 * and one libvirt connection each), rates from two samples an interval apart. A
 * host that does not answer is kept with its error: reported, never fatal. */
#ifndef VMBALANCE_POOL_H
#define VMBALANCE_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include <libvirt/libvirt.h>

#include "plan.h"
#include "vmkit-base.h"

struct pool_vm {
  char *name;
  char uuid[37];
  int state; /* virDomainState: running or paused (the others are not listed) */
  unsigned vcpus;
  double cpu;             /* percent of one host CPU */
  double mem, rss;        /* bytes: the balloon's size; what QEMU holds */
  double rd, wr, rx, tx;  /* bytes/s over its disks, its NICs */
  double dirty_mibs;      /* measured over the interval; -1: unknown */
  bool busy;              /* its lock is held by a run of this machine (POOL_LOCKS) */
};

struct pool_host {
  const struct vm_host *h; /* name, URI and tags, from the hosts file */
  char *error;             /* NULL: it answered */
  bool no_answer;          /* with error: it could not be reached at all (maybe off) */
  unsigned cpus;           /* its CPUs for VMs (the cpus= tag, else libvirt's count) */
  unsigned real_cpus;      /* libvirt's count, which cpu is a percent of */
  double cpu;              /* percent of all its CPUs, busy */
  double mem_total, mem_used; /* bytes (memory= tag, else libvirt's total) */
  double rd, wr, rx, tx;   /* bytes/s: the sums of its VMs' */
  double disk_cap, net_cap; /* bytes/s: the disk-io= and net-io= tags; 0: none */
  bool own_load;           /* its load that is not its VMs' counts (own-load=none: no) */
  struct pool_vm *vms;     /* by name */
  size_t nvms;
};

struct pool {
  struct vm_hosts hosts;
  struct pool_host *v; /* in the hosts file's order */
  size_t n;
};

/* Loads the hosts file (only the hosts named, when names is not NULL) and samples
 * every host: two samples interval_ms apart, each host given timeout_s more to
 * answer. POOL_DIRTY: have libvirt measure each running VM's dirty rate over the
 * interval (for the cost of moving it); POOL_LOCKS: mark the VMs whose lock a run
 * of this machine holds (busy). Returns 0; -1, saying nothing, when the tool is
 * interrupted; or an exit code after a message (a bad hosts file or tag, an
 * unknown host name). */
enum { POOL_DIRTY = 1, POOL_LOCKS = 2 };
int pool_collect(struct pool *p, const char *const *names, int interval_ms, int timeout_s, unsigned flags);
void pool_free(struct pool *p);
size_t pool_up(const struct pool *p); /* hosts that answered */

/* A connection to one host, given timeout_s to open (a hung host's open is left
 * waiting in a thread of its own, and the host gets no second one until it ends),
 * with libvirt's keepalive on it so that a host that stops answering fails the
 * calls that follow (needs libvirt's event loop: vm_events_init). NULL with *why
 * (caller frees). */
virConnectPtr pool_open(const char *uri, int timeout_s, char **why);

/* Whether `vmbalance ha` fenced the host and has not cleared it since (it answers
 * again but still holds definitions of HA VMs restarted elsewhere): such a host is
 * planned as in maintenance, never a destination. */
bool pool_fenced(const char *host);

/* The planner's view (plan.h) of the hosts that answered: CPU in percent of one
 * core, memory in MiB, disk and network in bytes/s. A VM found running on two
 * hosts is left out, with a warning; a fenced host is in maintenance. bp's arrays point into p and *arrays
 * (caller frees both). */
int pool_to_bal(const struct pool *p, struct bal_pool *bp, void *arrays[2]);

#endif
