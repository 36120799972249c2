/* Corstone-300 with an Ethos-U55 (Arm's FVP_Corstone_SSE-300_Ethos-U55, MPS3 AN552 boards): the
 * SSE-300 code plus the Ethos-U core driver and the NPU's PMU. Built with the driver (UDC_ETHOSU),
 * TFLM's ethos-u operator runs the Vela-compiled model on the NPU; without it (the no-model build)
 * the port is the CPU alone. */
#include "benchmark.h"
#include "sse300.h"

const char *th_platform_name(void) { return "corstone300"; }

#ifdef UDC_ETHOSU
#include "ethosu_driver.h"
#include "pmu_ethosu.h"

static struct ethosu_driver npu;

/* The U55 PMU has 4 event counters besides its cycle counter: active and idle cycles, and read
 * beats on AXI0 (SRAM: arena) and AXI1 (the model's weights in Flash/DDR). */
static const enum ethosu_pmu_event_type events[4] = {ETHOSU_PMU_NPU_ACTIVE, ETHOSU_PMU_NPU_IDLE,
                                                     ETHOSU_PMU_AXI0_RD_DATA_BEAT_RECEIVED,
                                                     ETHOSU_PMU_AXI1_RD_DATA_BEAT_RECEIVED};
static const char *const names[5] = {"npu-active-cycles", "npu-idle-cycles", "axi0-read-beats", "axi1-read-beats",
                                     "npu-total-cycles"};
static uint64_t totals[5];

void NPU_IRQHandler(void) { ethosu_irq_handler(&npu); }

const char *sse300_port_init(void) {
    if (ethosu_init(&npu, (void *)NPU_BASE, 0, 0, 1, 1) != 0) return "the Ethos-U55 did not initialise";
    sse300_enable_irq(NPU_IRQ);
    return 0;
}

/* The driver calls these around every command stream it runs, so the PMU counts NPU work only. */
void ethosu_inference_begin(struct ethosu_driver *drv, void *user_arg) {
    (void)user_arg;
    ETHOSU_PMU_Enable(drv);
    for (uint32_t i = 0; i < 4; i++) ETHOSU_PMU_Set_EVTYPER(drv, i, events[i]);
    ETHOSU_PMU_EVCNTR_ALL_Reset(drv);
    ETHOSU_PMU_CYCCNT_Reset(drv);
    ETHOSU_PMU_CNTR_Enable(drv, ETHOSU_PMU_CCNT_Msk | ETHOSU_PMU_CNT1_Msk | ETHOSU_PMU_CNT2_Msk |
                                    ETHOSU_PMU_CNT3_Msk | ETHOSU_PMU_CNT4_Msk);
}

void ethosu_inference_end(struct ethosu_driver *drv, void *user_arg) {
    (void)user_arg;
    for (uint32_t i = 0; i < 4; i++) totals[i] += ETHOSU_PMU_Get_EVCNTR(drv, i);
    totals[4] += ETHOSU_PMU_Get_CCNTR(drv);
    ETHOSU_PMU_Disable(drv);
}

void th_counters_reset(void) {
    for (int i = 0; i < 5; i++) totals[i] = 0;
}

void th_counters_report(void (*report)(const char *name, uint64_t total)) {
    for (int i = 0; i < 5; i++) report(names[i], totals[i]);
}
#else
const char *sse300_port_init(void) { return 0; }
void th_counters_reset(void) {}
void th_counters_report(void (*report)(const char *name, uint64_t total)) { (void)report; }
#endif
