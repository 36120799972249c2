/* MLPerf Tiny's command/reply strings (docs/papers.md, measured facts), with our own m- lines for counters:
 *   m-instructions-N   SysTick ticks of the timed inferences (instructions under QEMU -icount)
 *   m-arena-bytes-N    tensor arena the model uses
 *   m-input-bytes-N, m-output-bytes-N
 *   m-<counter>-N      a platform counter per timed inference (corstone300: m-npu-active-cycles-N,
 *                      m-npu-idle-cycles-N, m-npu-total-cycles-N, m-axi0-read-beats-N, m-axi1-read-beats-N)
 * Commands end with '%'; every reply ends with m-ready. */
#include "benchmark.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMMAND_MAX 4096  /* "db HEX...%" lines carry at most 2 KB of data each */
#define INPUT_CAPACITY (256 * 1024)

static char command[COMMAND_MAX];
static uint8_t input[INPUT_CAPACITY];
static size_t input_expected, input_loaded;
static const char *platform_failure;
static long timed_runs;

static void put(const char *text) {
    while (*text) th_putchar(*text++);
}

static void reply(const char *format, ...) {
    char line[256];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(line, sizeof line, format, arguments);
    va_end(arguments);
    put(line);
    put("\r\n");
}

/* newlib-nano's printf has no %llu */
static const char *decimal(uint64_t value, char digits[24]) {
    char *end = digits + 23;
    *end = '\0';
    do {
        *--end = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    return end;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void db_load(const char *arguments) {
    char *end;
    unsigned long size = strtoul(arguments, &end, 10);
    if (end == arguments || size == 0) { reply("e-[db load needs a byte count]"); return; }
    if (size > INPUT_CAPACITY) { reply("e-[input of %lu bytes exceeds the %u-byte buffer]", size, INPUT_CAPACITY); return; }
    if (model_input_bytes() && size != model_input_bytes()) {
        reply("e-[model input is %u bytes, not %lu]", (unsigned)model_input_bytes(), size);
        return;
    }
    input_expected = size;
    input_loaded = 0;
    reply("m-[Expecting %lu bytes]", size);
}

static void db_data(const char *hex) {
    size_t digits = strlen(hex);
    if (!input_expected) { reply("e-[db data before db load]"); return; }
    if (digits % 2) { reply("e-[odd number of hex digits]"); return; }
    for (size_t i = 0; i < digits; i += 2) {
        int high = hex_value(hex[i]), low = hex_value(hex[i + 1]);
        if (high < 0 || low < 0) { reply("e-[not a hex digit in db data]"); return; }
        if (input_loaded == input_expected) { reply("e-[more data than the %u bytes expected]", (unsigned)input_expected); return; }
        input[input_loaded++] = (uint8_t)(high << 4 | low);
    }
    if (input_loaded == input_expected) reply("m-load-done");
}

static void report_counter(const char *name, uint64_t total) {
    char digits[24];
    reply("m-%s-%s", name, decimal(total / (uint64_t)timed_runs, digits));
}

static void infer(const char *arguments) {
    char *end;
    long runs = strtol(arguments, &end, 10);
    long warmups = strtol(end, NULL, 10);
    if (runs <= 0) { reply("e-[infer needs a run count]"); return; }
    if (input_loaded != input_expected || !input_expected) { reply("e-[no complete input loaded]"); return; }
    if (platform_failure) { reply("e-[%s]", platform_failure); return; }
    const char *error = NULL;
    reply("m-warmup-start-%ld", warmups);
    for (long i = 0; i < warmups && !error; i++) {
        if (model_set_input(input, input_loaded)) error = "input size does not match the model";
        else error = model_invoke();
    }
    if (error) { reply("e-[%s]", error); return; }
    reply("m-warmup-done");
    reply("m-infer-start-%ld", runs);
    uint64_t ticks = 0;
    th_counters_reset();
    for (long i = 0; i < runs && !error; i++) {
        model_set_input(input, input_loaded);  /* TFLM may reuse the input buffer: copy before every invoke */
        uint64_t start = th_ticks();
        error = model_invoke();
        ticks += th_ticks() - start;
    }
    if (error) { reply("e-[%s]", error); return; }
    char digits[24];
    reply("m-lap-us-%s", decimal(ticks / th_ticks_per_us(), digits));
    reply("m-instructions-%s", decimal(ticks / (uint64_t)runs, digits));
    timed_runs = runs;
    th_counters_report(report_counter);
    reply("m-infer-done");
}

static void results(void) {
    size_t size = model_output_bytes();
    const uint8_t *output = model_output();
    if (!size || !output) { reply("e-[no results: run infer first]"); return; }
    put("m-results-[");
    for (size_t i = 0; i < size; i++) {
        char item[8];
        snprintf(item, sizeof item, i ? ",%d" : "%d", (int8_t)output[i]);
        put(item);
    }
    put("]\r\n");
}

static void dispatch(char *line) {
    if (!strcmp(line, "name")) reply("m-name-dut-[udc-harness %s]", th_platform_name());
    else if (!strcmp(line, "profile")) {
        reply("m-profile-[udc-harness benchmark core]");
        reply("m-model-[%s]", model_name());
        reply("m-input-bytes-%u", (unsigned)model_input_bytes());
        reply("m-output-bytes-%u", (unsigned)model_output_bytes());
        reply("m-arena-bytes-%u", (unsigned)model_arena_bytes());
    } else if (!strncmp(line, "db load ", 8)) db_load(line + 8);
    else if (!strncmp(line, "db ", 3)) db_data(line + 3);
    else if (!strncmp(line, "infer ", 6)) infer(line + 6);
    else if (!strcmp(line, "results")) results();
    else if (!strncmp(line, "exit", 4)) th_exit(atoi(line + 4));
    else reply("e-[unknown command: %.40s]", line);
    reply("m-ready");
}

void benchmark_main(const char *platform_error) {
    platform_failure = platform_error;
    reply("m-init-done");
    reply("m-ready");
    size_t length = 0;
    for (;;) {
        int c = th_getchar();
        if (c < 0) continue;
        if (c == '%') {
            command[length] = '\0';
            dispatch(command);
            length = 0;
        } else if (c == '\r' || c == '\n') {
            continue;
        } else if (length + 1 < COMMAND_MAX) {
            command[length++] = (char)c;
        } else {
            length = 0;
            reply("e-[command longer than %d characters]", COMMAND_MAX - 1);
            reply("m-ready");
        }
    }
}
