/* libvirt's event loop on a background thread, and what vmkit uses it for: how
 * long a guest's vCPUs were paused while an operation ran (a snapshot with memory,
 * the switch-over of a migration). Measured from the domain's own SUSPENDED and
 * RESUMED lifecycle events, not from around the API call. */
#include <pthread.h>
#include <string.h>

#include "vmkit.h"

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

struct vm_pause_watch {
  virConnectPtr conn;
  int callback;
  pthread_mutex_t lock;
  bool paused;
  int64_t since, total;
};

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
  struct vm_pause_watch *w = opaque;
  pthread_mutex_lock(&w->lock);
  int64_t now = vm_now_ms();
  if (event == VIR_DOMAIN_EVENT_SUSPENDED && !w->paused) {
    w->paused = true;
    w->since = now;
  } else if ((event == VIR_DOMAIN_EVENT_RESUMED || event == VIR_DOMAIN_EVENT_STOPPED ||
              event == VIR_DOMAIN_EVENT_STARTED) && w->paused) {
    w->total += now - w->since;
    w->paused = false;
  }
  pthread_mutex_unlock(&w->lock);
  return 0;
}

struct vm_pause_watch *vm_pause_watch_start(virConnectPtr conn, virDomainPtr dom)
{
  if (!loop_running) return NULL;
  struct vm_pause_watch *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  pthread_mutex_init(&w->lock, NULL);
  w->conn = conn;
  w->callback = virConnectDomainEventRegisterAny(conn, dom, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                 VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), w, NULL);
  if (w->callback < 0) {
    virResetLastError();
    free(w);
    return NULL;
  }
  return w;
}

long vm_pause_watch_stop(struct vm_pause_watch *w, int settle_ms)
{
  if (!w) return -1;
  /* The RESUMED event can arrive just after the call that caused it returns. */
  int64_t until = vm_now_ms() + settle_ms;
  for (;;) {
    pthread_mutex_lock(&w->lock);
    bool open = w->paused;
    pthread_mutex_unlock(&w->lock);
    if (!open || vm_now_ms() >= until) break;
    vm_sleep_ms(5);
  }
  virConnectDomainEventDeregisterAny(w->conn, w->callback);
  pthread_mutex_lock(&w->lock);
  long total = (long)(w->total + (w->paused ? vm_now_ms() - w->since : 0));
  pthread_mutex_unlock(&w->lock);
  pthread_mutex_destroy(&w->lock);
  free(w);
  return total;
}
