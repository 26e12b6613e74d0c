/* vmbalance simulate: being built on its own branch (replaces this file). */
#include "vmbalance.h"

int cmd_simulate(int argc, char **argv)
{
  return vm_fail(VM_EXIT_FAIL, "simulate is not built yet");
}
