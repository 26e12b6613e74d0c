/* A bounded work queue on a few threads (see vmkit-base.h). */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "vmkit-base.h"

struct item {
  void (*fn)(void *);
  void *arg;
};

struct vm_workq {
  pthread_mutex_t mu;
  pthread_cond_t more, room, idle;
  struct item *v;
  size_t depth, head, n, busy;
  size_t pushers; /* waiting for room */
  bool stop;
  int nthreads;
  pthread_t *threads;
};

static void *worker(void *p)
{
  struct vm_workq *q = p;
  pthread_mutex_lock(&q->mu);
  for (;;) {
    while (!q->n && !q->stop) pthread_cond_wait(&q->more, &q->mu);
    if (!q->n && q->stop) break;
    struct item it = q->v[q->head];
    q->head = (q->head + 1) % q->depth;
    q->n--;
    q->busy++;
    /* A waiting pusher is woken when half the queue is free, not at every
     * item: each wake-up is a cross-CPU interrupt, which costs more than a
     * small chunk's work on a paravirtualized host. */
    if (q->pushers && q->n <= q->depth / 2) pthread_cond_signal(&q->room);
    pthread_mutex_unlock(&q->mu);
    it.fn(it.arg);
    pthread_mutex_lock(&q->mu);
    q->busy--;
    if (!q->n && !q->busy) pthread_cond_broadcast(&q->idle);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

struct vm_workq *vm_workq_new(int nthreads, size_t depth)
{
  if (nthreads <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = c < 1 ? 1 : c > 8 ? 8 : (int)c;
  }
  struct vm_workq *q = calloc(1, sizeof *q);
  if (!q) abort();
  q->depth = depth ? depth : 1;
  q->v = calloc(q->depth, sizeof *q->v);
  q->threads = calloc((size_t)nthreads, sizeof *q->threads);
  if (!q->v || !q->threads) abort();
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->more, NULL);
  pthread_cond_init(&q->room, NULL);
  pthread_cond_init(&q->idle, NULL);
  for (int i = 0; i < nthreads; i++)
    if (pthread_create(&q->threads[i], NULL, worker, q) != 0) abort();
  q->nthreads = nthreads;
  return q;
}

int vm_workq_threads(const struct vm_workq *q) { return q->nthreads; }

void vm_workq_push(struct vm_workq *q, void (*fn)(void *), void *arg)
{
  pthread_mutex_lock(&q->mu);
  while (q->n == q->depth) {
    q->pushers++;
    pthread_cond_wait(&q->room, &q->mu);
    q->pushers--;
  }
  q->v[(q->head + q->n) % q->depth] = (struct item){ fn, arg };
  q->n++;
  pthread_cond_signal(&q->more);
  pthread_mutex_unlock(&q->mu);
}

void vm_workq_drain(struct vm_workq *q)
{
  pthread_mutex_lock(&q->mu);
  while (q->n || q->busy) pthread_cond_wait(&q->idle, &q->mu);
  pthread_mutex_unlock(&q->mu);
}

void vm_workq_free(struct vm_workq *q)
{
  if (!q) return;
  vm_workq_drain(q);
  pthread_mutex_lock(&q->mu);
  q->stop = true;
  pthread_cond_broadcast(&q->more);
  pthread_mutex_unlock(&q->mu);
  for (int i = 0; i < q->nthreads; i++) pthread_join(q->threads[i], NULL);
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->more);
  pthread_cond_destroy(&q->room);
  pthread_cond_destroy(&q->idle);
  free(q->v);
  free(q->threads);
  free(q);
}
