/* The model side of a build without TFLM: the protocol works, inference answers with an error. */
#include "benchmark.h"

const char *model_name(void) { return "none"; }
size_t model_input_bytes(void) { return 0; }
size_t model_output_bytes(void) { return 0; }
size_t model_arena_bytes(void) { return 0; }
int model_set_input(const uint8_t *data, size_t size) { (void)data; (void)size; return 0; }
const char *model_invoke(void) { return "no model in this firmware: build it with a TFLM checkout (TFLM_ROOT)"; }
const uint8_t *model_output(void) { return 0; }
float model_output_scale(void) { return 1.0f; }
int model_output_zero_point(void) { return 0; }
