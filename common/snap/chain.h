/* Backing links between images, block jobs, and definitions rewritten after the
 * chain under them changed (chain.c). */
#ifndef VMKIT_SNAP_CHAIN_H
#define VMKIT_SNAP_CHAIN_H

#include "snap.h"

struct edge {
  char *file, *backing, *format; /* real paths; backing NULL at the bottom */
};
struct graph {
  struct edge *v;
  size_t n;
};

int graph_add(virConnectPtr conn, struct graph *g, const char *top);
int graph_of_vm(virConnectPtr conn, virDomainPtr dom, const struct snaps *s, struct graph *g);
const struct edge *graph_find(const struct graph *g, const char *file);
void graph_children(const struct graph *g, const char *file, struct vm_strv *out);
void graph_free(struct graph *g);

/* Follows a block job until it is gone; with pivot, pivots once it is ready. */
int wait_block_job(virDomainPtr dom, const char *target, bool pivot);

/* Merges child into base on a shut-off VM, in a paused helper domain over the chain
 * whose top is top (top == child: the child is the chain's top). */
int offline_commit(virConnectPtr conn, virDomainPtr dom, const char *top, const char *top_format, const char *base,
                   const char *child);

/* retarget: NULL or a NULL-terminated list of (target, new source, format) triples. */
void fix_disks(xmlDocPtr doc, char *const *retarget);
int redefine_without_backing(virConnectPtr conn, virDomainPtr dom, char *const *retarget);

#endif
