/* The pause watch (common/virt/events.c) against libvirt's test driver: it adds to
 * the real tests of vmsnap (which measure pauses on TCG guests), and it can do what
 * they cannot: stop a watch while libvirt is still running its callback. Built with
 * AddressSanitizer (Makefile), so that a use of the freed watch fails the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "vmkit.h"

static virConnectPtr conn;
static virDomainPtr dom;

static int setup(void **state)
{
  vm_virt_init();
  if (vm_events_init() != 0) return -1;
  conn = virConnectOpen("test:///default");
  if (!conn) return -1;
  dom = virDomainLookupByName(conn, "test");
  return dom ? 0 : -1;
}

static int teardown(void **state)
{
  virDomainFree(dom);
  virConnectClose(conn);
  return 0;
}

static void measures_a_pause(void **state)
{
  unsetenv("VMKIT_TEST_EVENT_DELAY_MS");
  struct vm_pause_watch *w = vm_pause_watch_start(conn, dom);
  assert_non_null(w);
  assert_int_equal(virDomainSuspend(dom), 0);
  vm_sleep_ms(100);
  assert_int_equal(virDomainResume(dom), 0);
  long ms = vm_pause_watch_stop(w, 2000);
  assert_true(ms >= 50);
}

/* The callback is still running (slowed by the test hook) when the watch stops:
 * what it touches must still be there when it goes on. */
static void stop_while_the_callback_runs(void **state)
{
  setenv("VMKIT_TEST_EVENT_DELAY_MS", "600", 1);
  struct vm_pause_watch *w = vm_pause_watch_start(conn, dom);
  assert_non_null(w);
  assert_int_equal(virDomainSuspend(dom), 0);
  vm_sleep_ms(200); /* the event is dispatched; its callback sleeps */
  vm_pause_watch_stop(w, 0);
  vm_sleep_ms(800); /* the callback wakes up and uses its state */
  assert_int_equal(virDomainResume(dom), 0);
  unsetenv("VMKIT_TEST_EVENT_DELAY_MS");
  vm_sleep_ms(100);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(measures_a_pause),
    cmocka_unit_test(stop_while_the_callback_runs),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
