/* vmbalance simulate's engine on traces small enough to work out by hand: the
 * power model, the trace reader's refusals, and what THR-MMT, LR-MMT and the
 * vmbalance planner do with one overloaded host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../vmbalance/sim.h"

static void parse_ok(const char *text, struct sim_trace *t)
{
  struct sim_error e;
  if (sim_trace_parse(text, strlen(text), t, &e) != 0) fail_msg("line %d: %s", e.line, e.msg);
}

static void parse_bad(const char *text, int line, const char *needle)
{
  struct sim_trace t;
  struct sim_error e;
  assert_int_equal(sim_trace_parse(text, strlen(text), &t, &e), -1);
  assert_int_equal(e.line, line);
  if (!strstr(e.msg, needle)) fail_msg("'%s' does not say '%s'", e.msg, needle);
  assert_int_equal(t.nvms, 0);
}

static void config(const char *text, struct bal_config *c)
{
  struct bal_error e;
  if (bal_config_parse(text, strlen(text), c, &e) != 0) fail_msg("config line %d: %s", e.line, e.msg);
}

static void run(const struct sim_trace *t, enum sim_policy p, const struct sim_setup *s, struct sim_result *r)
{
  const char *why = NULL;
  if (sim_run(t, p, s, r, &why) != 0) fail_msg("%s: %s", sim_policy_names[p], why);
}

/* SPECpower tables, linear between the 10 % steps. */
static void power_model(void **state)
{
  assert_float_equal(sim_power(0, 0), 86, 1e-9);
  assert_float_equal(sim_power(0, 1), 117, 1e-9);
  assert_float_equal(sim_power(0, 0.05), 87.7, 1e-9);
  assert_float_equal(sim_power(1, 0.55), 118.5, 1e-9);
  assert_float_equal(sim_power(1, 0.999999), 135 - 0.00002, 1e-4);
  assert_float_equal(sim_host_mips(0), 3720, 1e-9);
  assert_float_equal(sim_host_mips(1), 5320, 1e-9);
  /* CloudSim's types by blocks of ceil(n / 4): 10 VMs are 3, 3, 3, 1. */
  assert_int_equal(sim_vm_type(2, 10), 0);
  assert_int_equal(sim_vm_type(3, 10), 1);
  assert_int_equal(sim_vm_type(9, 10), 3);
  assert_float_equal(sim_migration_s(870), 13.92, 1e-9);
}

static void trace_reader(void **state)
{
  struct sim_trace t;
  parse_ok("a\t1 2 3\r\nb\t4 5 100\n\n", &t);
  assert_int_equal(t.nvms, 2);
  assert_int_equal(t.nticks, 3);
  assert_string_equal(t.names[1], "b");
  assert_float_equal(t.util[5], 100, 1e-6);
  sim_trace_free(&t);
  parse_bad("a\t1 2 3\nb\t1 2\n", 2, "2 values, the first line has 3");
  parse_bad("a\t1 2\nb\t1 x\n", 2, "'x' is not a percentage");
  parse_bad("a\t1 2\n\nc\t1 101\n", 3, "'101'");
  parse_bad("a\t1 -2\n", 1, "'-2'");
  parse_bad("a 1 2\n", 1, "expected VM-ID<TAB>values");
  parse_bad("\t1 2\n", 1, "expected VM-ID<TAB>values");
  parse_bad("a\t\n", 1, "no values");
  parse_bad("", 0, "no VM");
  parse_bad("a\t1 2\nb\t3 4\na\t5 6\n", 3, "VM 'a' again (first on line 1)");
}

/* One VM of 2500 MIPS at 0 % for an hour: it can only start on the G5 (a G4's
 * core has 1860 MIPS), which idles at 93.7 W; the G4 holds nothing and is off. */
static void idle_energy(void **state)
{
  char text[256] = "vm0\t0";
  for (int i = 1; i < 12; i++) strcat(text, " 0");
  strcat(text, "\n");
  struct sim_trace t;
  parse_ok(text, &t);
  struct sim_setup s;
  sim_setup_init(&s);
  s.nhosts = 2;
  struct bal_config c;
  config("policy consolidate\nheadroom 10%\n", &c);
  s.conf = &c;
  for (int p = 0; p < SIM_NPOLICIES; p++) {
    struct sim_result r;
    run(&t, (enum sim_policy)p, &s, &r);
    assert_float_equal(r.energy_kwh, 93.7 * 3600 / 3.6e6, 1e-9);
    assert_int_equal(r.migrations, 0);
    assert_int_equal(r.hosts_off_end, 1);
    assert_float_equal(r.slatah, 0, 0);
    assert_float_equal(r.pdm, 0, 0);
  }
  bal_config_free(&c);
  sim_trace_free(&t);
}

/* Hosts G4, G5, G4, G5; VMs of 2500, 2000, 1000 and 500 MIPS. On the G5 h1,
 * vm0 at 95 % and vm1 at 100 % make 4375 of 5320 MIPS (82 %): above THR's 0.8
 * and LR's 0.7 (no history yet). MMT takes vm0 (870 MiB, the least); h1 is then
 * at 38 %. Only a G5's core holds 2375 MIPS: vm0 goes to the G5 h3, off until
 * then. h0 (vm2, vm3 at 10 %) cannot be emptied: h1 is overloaded and the others
 * were off. One migration, of 870 MiB (13.92 s), losing 10 % of 2375 MIPS. */
static void one_overloaded_host(void **state)
{
  struct sim_trace t;
  parse_ok("vm0\t95\nvm1\t100\nvm2\t10\nvm3\t10\n", &t);
  int where[] = { 1, 1, 0, 0 };
  struct sim_setup s;
  sim_setup_init(&s);
  s.nhosts = 4;
  s.placement = where;
  double asked = (2375 + 2000 + 100 + 50) * 300.0, lost = 0.1 * 2375 * 13.92;
  for (int p = SIM_THR_MMT; p <= SIM_LR_MMT; p++) {
    struct sim_result r;
    run(&t, (enum sim_policy)p, &s, &r);
    assert_int_equal(r.migrations, 1);
    assert_float_equal(r.pdm, lost / asked, 1e-12);
    assert_float_equal(r.slatah, 0, 0);
    assert_int_equal(r.hosts_off_end, 1);
  }
  /* Without the overload (h1 at 61 %), h0 is the least utilised host and h1 can
   * take its two VMs: two migrations, three hosts off. */
  sim_trace_free(&t);
  parse_ok("vm0\t50\nvm1\t100\nvm2\t10\nvm3\t10\n", &t);
  struct sim_result r;
  run(&t, SIM_THR_MMT, &s, &r);
  assert_int_equal(r.migrations, 2);
  assert_int_equal(r.hosts_off_end, 3);
  sim_trace_free(&t);
}

/* One G4 (3720 MIPS) holding 4500 MIPS of demand, nowhere to move it: every
 * second of its active time is at 100 %. */
static void slatah_of_a_stuck_host(void **state)
{
  struct sim_trace t;
  parse_ok("vm0\t100 100\nvm1\t100 100\n", &t);
  int where[] = { 0, 0 };
  struct sim_setup s;
  sim_setup_init(&s);
  s.nhosts = 1;
  s.placement = where;
  struct bal_config c;
  config("policy consolidate\nheadroom 10%\n", &c);
  s.conf = &c;
  for (int p = 0; p < SIM_NPOLICIES; p++) {
    struct sim_result r;
    run(&t, (enum sim_policy)p, &s, &r);
    assert_int_equal(r.migrations, 0);
    assert_float_equal(r.slatah, 1, 1e-12);
    assert_float_equal(r.slav, 0, 0);
    assert_float_equal(r.energy_kwh, 117 * 600 / 3.6e6, 1e-12);
  }
  bal_config_free(&c);
  sim_trace_free(&t);
}

/* The planner: h0 (a G4, 3720) holds vm0 at 70 % (1750) and vm1 (2000), 3750
 * MIPS, above its capacity; the relief moves the unit that ends the excess over
 * the headroom (402 MIPS) alone with the least memory, vm0, to the most loaded
 * host it fits, h1. Consolidation then empties h0 (vm1 fits on h1 within its
 * 90 %): two migrations, three hosts off. */
static void vmbalance_relieves_then_packs(void **state)
{
  struct sim_trace t;
  parse_ok("vm0\t70\nvm1\t100\nvm2\t10\nvm3\t10\n", &t);
  int where[] = { 0, 0, 1, 1 };
  struct sim_setup s;
  sim_setup_init(&s);
  s.nhosts = 4;
  s.placement = where;
  struct bal_config c;
  config("policy consolidate\nlevel 5\nheadroom 10%\n", &c);
  s.conf = &c;
  struct sim_result r;
  run(&t, SIM_VMBALANCE, &s, &r);
  assert_int_equal(r.migrations, 2);
  assert_int_equal(r.hosts_off_end, 3);
  /* h0 is above capacity only until its migrations end (27.84 s, vm1's). */
  assert_float_equal(r.slatah, 27.84 / (300 + 27.84), 1e-9);
  /* Level 1: mandatory moves only, as in `plan`: no relief, no consolidation. */
  bal_config_free(&c);
  config("policy consolidate\nlevel 1\nheadroom 10%\n", &c);
  run(&t, SIM_VMBALANCE, &s, &r);
  assert_int_equal(r.migrations, 0);
  assert_int_equal(r.hosts_off_end, 2);
  bal_config_free(&c);
  sim_trace_free(&t);
}

/* CloudSim's own behaviour: no decision at the first tick, and a VM whose demand
 * is 0 at a tick and the next leaves the pool. vm0 idles for 3 ticks: its G5 is
 * on for the first tick only (93.7 W for 300 s); without the flag, all three. */
static void cloudsim_completed_vms(void **state)
{
  struct sim_trace t;
  parse_ok("vm0\t0 0 0\n", &t);
  struct sim_setup s;
  sim_setup_init(&s);
  s.nhosts = 2;
  s.cloudsim = true;
  struct sim_result r;
  run(&t, SIM_THR_MMT, &s, &r);
  assert_float_equal(r.energy_kwh, 93.7 * 300 / 3.6e6, 1e-12);
  assert_float_equal(r.vms_end, 0, 0);
  assert_int_equal(r.hosts_off_end, 2);
  s.cloudsim = false;
  run(&t, SIM_THR_MMT, &s, &r);
  assert_float_equal(r.energy_kwh, 93.7 * 900 / 3.6e6, 1e-12);
  assert_float_equal(r.vms_end, 1, 0);
  sim_trace_free(&t);
  /* A single 0 between two samples above it: the VM stays. */
  parse_ok("vm0\t5 0 5\n", &t);
  s.cloudsim = true;
  run(&t, SIM_THR_MMT, &s, &r);
  assert_float_equal(r.vms_end, 1, 0);
  sim_trace_free(&t);
}

static void too_few_hosts(void **state)
{
  struct sim_trace t;
  parse_ok("vm0\t1\n", &t);
  struct sim_setup s;
  sim_setup_init(&s);
  s.nhosts = 1; /* a G4: no core for a 2500 MIPS VM */
  struct sim_result r;
  const char *why = NULL;
  assert_int_equal(sim_run(&t, SIM_THR_MMT, &s, &r, &why), -1);
  assert_non_null(strstr(why, "fits on no host"));
  sim_trace_free(&t);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(power_model),
    cmocka_unit_test(trace_reader),
    cmocka_unit_test(idle_energy),
    cmocka_unit_test(one_overloaded_host),
    cmocka_unit_test(slatah_of_a_stuck_host),
    cmocka_unit_test(vmbalance_relieves_then_packs),
    cmocka_unit_test(cloudsim_completed_vms),
    cmocka_unit_test(too_few_hosts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
