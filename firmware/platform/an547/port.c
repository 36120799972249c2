/* QEMU's mps3-an547: the SSE-300 code alone. QEMU models no Ethos-U55 and its DWT and PMU cycle
 * counters read 0, so the only counter is the SysTick (instructions under -icount). */
#include "benchmark.h"
#include "sse300.h"

const char *sse300_port_init(void) { return 0; }
const char *th_platform_name(void) { return "an547"; }
void th_counters_reset(void) {}
void th_counters_report(void (*report)(const char *name, uint64_t total)) { (void)report; }
