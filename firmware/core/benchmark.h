/* The benchmark core: MLPerf Tiny's serial protocol (docs/protocol.md), tensor load, invoke loop and counters.
 * It knows no platform: a port supplies the th_* functions below, a model build the model_* ones. */
#ifndef UDC_BENCHMARK_H
#define UDC_BENCHMARK_H

#include <stddef.h>
#include <stdint.h>

/* platform port */
int th_getchar(void);                    /* blocking read of one byte from the host link */
void th_putchar(char c);
uint64_t th_ticks(void);                 /* free-running tick counter (SysTick under QEMU -icount) */
uint32_t th_ticks_per_us(void);
const char *th_platform_name(void);
void th_exit(int code);                  /* end the run (semihosting exit on an547) */
/* counters of the platform around the timed inferences (the NPU's PMU on corstone300; none on an547):
 * reset before them, then each reported with its total over the timed runs */
void th_counters_reset(void);
void th_counters_report(void (*report)(const char *name, uint64_t total));

/* model (model_none.c when built without TFLM) */
const char *model_name(void);
size_t model_input_bytes(void);
size_t model_output_bytes(void);
size_t model_arena_bytes(void);
int model_set_input(const uint8_t *data, size_t size);  /* 0 or an error message id below */
const char *model_invoke(void);          /* NULL on success, else the error text */
const uint8_t *model_output(void);       /* the int8 output tensor after an invoke, else NULL */
float model_output_scale(void);          /* the output tensor's quantisation: real = scale * (q - zero_point) */
int model_output_zero_point(void);

/* the protocol loop: never returns except through th_exit; a platform_error (the NPU did not start, say)
 * is the answer to every infer */
void benchmark_main(const char *platform_error);

#endif
