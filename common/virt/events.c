/* libvirt's event loop on a background thread, and what vmkit uses it for: how
 * long a guest's vCPUs were paused while an operation ran (a snapshot with memory,
 * the switch-over of a migration). Measured from the domain's own SUSPENDED and
 * RESUMED lifecycle events, not from around the API call. */
#include <pthread.h>
#include <string.h>

#include "vmkit-virt.h"

static bool loop_running;

static void *event_loop(void *arg)
{
  for (;;) virEventRunDefaultImpl();
  return NULL;
}

int vm_events_init(void)
{
  if (loop_running) return 0;
  if (virEventRegisterDefaultImpl() < 0) return vm_fail_virt("cannot start libvirt's event loop");
  pthread_t t;
  if (pthread_create(&t, NULL, event_loop, NULL) != 0)
    return vm_fail(VM_EXIT_FAIL, "cannot start the event thread");
  pthread_detach(t);
  loop_running = true;
  return 0;
}

/* What the callback writes. libvirt may still be running the callback when the
 * caller deregisters it, so the state is shared: one reference for the callback,
 * dropped by libvirt itself (the free function) once it will never call it again,
 * and one for the watch. */
struct pause_state {
  pthread_mutex_t lock;
  int refs;
  bool paused;
  int64_t since, total;
};

struct vm_pause_watch {
  virConnectPtr conn;
  int callback;
  struct pause_state *st;
};

static void state_unref(void *opaque)
{
  struct pause_state *st = opaque;
  pthread_mutex_lock(&st->lock);
  int left = --st->refs;
  pthread_mutex_unlock(&st->lock);
  if (left > 0) return;
  pthread_mutex_destroy(&st->lock);
  free(st);
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
  struct pause_state *st = opaque;
  /* A test hook: a slow callback, to prove that a watch stopped meanwhile is safe. */
  const char *delay = getenv("VMKIT_TEST_EVENT_DELAY_MS");
  if (delay && *delay) vm_sleep_ms(atoi(delay));
  pthread_mutex_lock(&st->lock);
  int64_t now = vm_now_ms();
  if (event == VIR_DOMAIN_EVENT_SUSPENDED && !st->paused) {
    st->paused = true;
    st->since = now;
  } else if ((event == VIR_DOMAIN_EVENT_RESUMED || event == VIR_DOMAIN_EVENT_STOPPED ||
              event == VIR_DOMAIN_EVENT_STARTED) && st->paused) {
    st->total += now - st->since;
    st->paused = false;
  }
  pthread_mutex_unlock(&st->lock);
  return 0;
}

struct vm_pause_watch *vm_pause_watch_start(virConnectPtr conn, virDomainPtr dom)
{
  if (!loop_running) return NULL;
  struct vm_pause_watch *w = calloc(1, sizeof *w);
  struct pause_state *st = calloc(1, sizeof *st);
  if (!w || !st) {
    free(w);
    free(st);
    return NULL;
  }
  pthread_mutex_init(&st->lock, NULL);
  st->refs = 2;
  w->conn = conn;
  w->st = st;
  w->callback = virConnectDomainEventRegisterAny(conn, dom, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                 VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), st, state_unref);
  if (w->callback < 0) {
    /* Not registered: libvirt holds no reference. */
    virResetLastError();
    state_unref(st);
    state_unref(st);
    free(w);
    return NULL;
  }
  return w;
}

long vm_pause_watch_stop(struct vm_pause_watch *w, int settle_ms)
{
  if (!w) return -1;
  struct pause_state *st = w->st;
  /* The RESUMED event can arrive just after the call that caused it returns. */
  int64_t until = vm_now_ms() + settle_ms;
  for (;;) {
    pthread_mutex_lock(&st->lock);
    bool open = st->paused;
    pthread_mutex_unlock(&st->lock);
    if (!open || vm_now_ms() >= until) break;
    vm_sleep_ms(5);
  }
  virConnectDomainEventDeregisterAny(w->conn, w->callback);
  pthread_mutex_lock(&st->lock);
  long total = (long)(st->total + (st->paused ? vm_now_ms() - st->since : 0));
  pthread_mutex_unlock(&st->lock);
  state_unref(st);
  free(w);
  return total;
}
