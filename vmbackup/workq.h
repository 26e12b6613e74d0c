/* A small pool of worker threads with a bounded queue: a backup's chunks are
 * hashed, compressed and sealed, and a restore's opened, on every core while
 * one thread reads or writes the disk. */
#ifndef VMBACKUP_WORKQ_H
#define VMBACKUP_WORKQ_H

#include <stddef.h>

struct vb_workq;
/* nthreads workers (0: one per core, at most 8); at most depth items wait. */
struct vb_workq *vb_workq_new(int nthreads, size_t depth);
/* Queues fn(arg), waiting while the queue is full. */
void vb_workq_push(struct vb_workq *q, void (*fn)(void *), void *arg);
/* Waits until every queued item has run. */
void vb_workq_drain(struct vb_workq *q);
/* Drains, stops the threads, frees. */
void vb_workq_free(struct vb_workq *q);
int vb_workq_threads(const struct vb_workq *q);

#endif
