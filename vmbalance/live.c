/* vmbalance collect|plan|run: being built (replaced by the verbs that reach hosts). */
#include "vmbalance.h"

int cmd_collect(int argc, char **argv) { return vm_fail(VM_EXIT_FAIL, "collect is not built yet"); }
int cmd_plan(int argc, char **argv) { return vm_fail(VM_EXIT_FAIL, "plan is not built yet"); }
int cmd_run(int argc, char **argv) { return vm_fail(VM_EXIT_FAIL, "run is not built yet"); }
