/* The benchmark core's command loop: MLPerf Tiny's serial protocol, as docs/protocol.md describes it
 * (the boot lines, every command and its reply, our own m- lines, the model id and its input format).
 * A command is text ending with '%', split into words on spaces and matched by whole words; every
 * reply ends with exactly one m-ready. Our lines beside the reference's:
 *   m-instructions-N   SysTick ticks per timed inference (instructions under QEMU -icount)
 *   m-<counter>-N      a platform counter per timed inference (corstone300: m-npu-active-cycles-N,
 *                      m-npu-idle-cycles-N, m-npu-total-cycles-N, m-axi0-read-beats-N, m-axi1-read-beats-N)
 *   m-input-format-[int8|uint8-shifted], m-input-bytes-N, m-output-bytes-N, m-arena-bytes-N (profile)
 *   m-results-int8-[q,...]  the raw int8 outputs, after the reference's dequantised m-results-[...] */
#include "benchmark.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

#ifndef UDC_MODEL_ID
#error "UDC_MODEL_ID is not defined: firmware/CMakeLists.txt passes it (cache variable UDC_MODEL_ID)"
#endif

#define COMMAND_MAX 4096  /* "db HEX...%" lines carry at most 2 KB of data each */
#define WORDS_MAX 3       /* the longest commands have three words: db load N, infer N W */
#define INPUT_CAPACITY (256 * 1024)
#define DEFAULT_RUNS 1    /* infer without arguments: the reference's defaults */
#define DEFAULT_WARMUPS 10
#define BUFFER_LINE_BYTES 8  /* db print: bytes per m-buffer- line, as the reference */

static char command[COMMAND_MAX];
static uint8_t input[INPUT_CAPACITY];  /* the model's int8 input: each byte as sent ^ input_shift */
static size_t input_expected, input_loaded;
static uint8_t input_shift;            /* 0x80 when the host sends uint8 bytes (int8 + 128), else 0 */
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

/* The model ids whose reference submissions take uint8 input (the int8 input + 128): image
 * classification and visual wake words. Every other id takes int8 as sent. */
static int takes_shifted_input(const char *model_id) {
    return !strcmp(model_id, "ic01") || !strcmp(model_id, "vww01");
}

/* word as a whole decimal integer within long's range: 0, else -1 */
static int number(const char *word, long *value) {
    char *end;
    errno = 0;
    *value = strtol(word, &end, 10);
    return end != word && *end == '\0' && errno == 0 ? 0 : -1;
}

/* line split in place on spaces; the number of words, of which the first WORDS_MAX are in words */
static int split_words(char *line, char *words[WORDS_MAX]) {
    int count = 0;
    for (char *c = line; *c;) {
        if (*c == ' ') {
            *c++ = '\0';
            continue;
        }
        if (count < WORDS_MAX) words[count] = c;
        count++;
        while (*c && *c != ' ') c++;
    }
    return count;
}

static void timestamp(void) {
    char digits[24];
    reply("m-lap-us-%s", text_uint64(th_ticks() / th_ticks_per_us(), digits));
}

static void help(void) {
    put("udc-harness benchmark core\r\n"
        "help          : Print this information\r\n"
        "name          : Print the name of the device\r\n"
        "timestamp     : Print the microseconds since boot\r\n"
        "profile       : Print the firmware, the model id and the input format\r\n"
        "db SUBCMD     : Manipulate a generic byte buffer\r\n"
        "  load N      : Allocate N bytes and set load counter\r\n"
        "  db HH[HH]*  : Load 8-bit hex byte(s) until N bytes\r\n"
        "  print       : Print the whole buffer as hex, 8 bytes a line\r\n"
        "infer [N [W]] : Load input, execute N inferences (1) after W warmup loops (10)\r\n"
        "results       : Print the outputs: dequantised, then as int8\r\n"
        "exit [CODE]   : End the run with exit status CODE (0)\r\n");
}

static void profile(void) {
    reply("m-profile-[udc-harness benchmark core]");
    reply("m-model-[%s]", UDC_MODEL_ID);
    reply("m-input-format-[%s]", input_shift ? "uint8-shifted" : "int8");
    reply("m-input-bytes-%u", (unsigned)model_input_bytes());
    reply("m-output-bytes-%u", (unsigned)model_output_bytes());
    reply("m-arena-bytes-%u", (unsigned)model_arena_bytes());
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void db_load(int count, char **words) {
    long size;
    if (count < 3 || number(words[2], &size) || size <= 0) { reply("e-[db load needs a byte count]"); return; }
    if (size > INPUT_CAPACITY) { reply("e-[input of %ld bytes exceeds the %u-byte buffer]", size, INPUT_CAPACITY); return; }
    if (model_input_bytes() && (size_t)size != model_input_bytes()) {
        reply("e-[model input is %u bytes, not %ld]", (unsigned)model_input_bytes(), size);
        return;
    }
    input_expected = (size_t)size;
    input_loaded = 0;
    reply("m-[Expecting %ld bytes]", size);
}

/* the buffer db load sized, as it was sent (unloaded bytes as they are) */
static void db_print(void) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < input_expected; i++) {
        uint8_t byte = input[i] ^ input_shift;
        char item[4] = {'-', digits[byte >> 4], digits[byte & 0xF], '\0'};
        if (i % BUFFER_LINE_BYTES == 0) put("m-buffer");
        put(item);
        if ((i + 1) % BUFFER_LINE_BYTES == 0 || i + 1 == input_expected) put("\r\n");
    }
}

static void db_data(const char *hex) {
    size_t digits = strlen(hex);
    if (!input_expected) { reply("e-[db data before db load]"); return; }
    if (digits % 2) { reply("e-[odd number of hex digits]"); return; }
    for (size_t i = 0; i < digits; i += 2) {
        int high = hex_value(hex[i]), low = hex_value(hex[i + 1]);
        if (high < 0 || low < 0) { reply("e-[not a hex digit in db data]"); return; }
        if (input_loaded == input_expected) { reply("e-[more data than the %u bytes expected]", (unsigned)input_expected); return; }
        input[input_loaded++] = (uint8_t)(high << 4 | low) ^ input_shift;
    }
    if (input_loaded == input_expected) reply("m-load-done");
}

#ifdef MODEL_SLOT_ADDRESS
/* db slot I: input I of the image slot the host filled before the start (targets/runtime_image.py: magic
 * UDCI, count, bytes per input, then the int8 inputs), so accuracy needs no transfer per image */
#define IMAGES_SLOT_ADDRESS (MODEL_SLOT_ADDRESS + 0x800000u)
static void db_slot(int count, char **words) {
    const uint8_t *slot = (const uint8_t *)IMAGES_SLOT_ADDRESS;
    uint32_t images, size;
    long index;
    if (memcmp(slot, "UDCI", 4)) { reply("e-[no inputs in the image slot]"); return; }
    memcpy(&images, slot + 4, 4);
    memcpy(&size, slot + 8, 4);
    if (count < 3 || number(words[2], &index) || index < 0 || (uint32_t)index >= images) {
        reply("e-[db slot needs an input index below %u]", (unsigned)images);
        return;
    }
    if (size > INPUT_CAPACITY) { reply("e-[inputs of %u bytes exceed the %u-byte buffer]", (unsigned)size, INPUT_CAPACITY); return; }
    memcpy(input, slot + 16 + (size_t)index * size, size);
    input_expected = input_loaded = size;
    reply("m-load-done");
}
#endif

static void db(int count, char **words) {
    if (count < 2) reply("e-[Command 'db' requires a subcommand]");
    else if (!strcmp(words[1], "load")) db_load(count, words);
    else if (!strcmp(words[1], "print")) db_print();
#ifdef MODEL_SLOT_ADDRESS
    else if (!strcmp(words[1], "slot")) db_slot(count, words);
#endif
    else if (count > 2) reply("e-[db data is one word of hex digits]");
    else db_data(words[1]);
}

/* the outputs of the last inference: the reference's line (each dequantised, three decimals), then ours (int8) */
static void results(void) {
    size_t size = model_output_bytes();
    const uint8_t *output = model_output();
    if (!size || !output) { reply("e-[no results: run infer first]"); return; }
    float scale = model_output_scale();
    int zero_point = model_output_zero_point();
    put("m-results-[");
    for (size_t i = 0; i < size; i++) {
        char text[TEXT_FIXED3_SIZE];
        if (i) put(",");
        put(text_fixed3((float)((int8_t)output[i] - zero_point) * scale, text));
    }
    put("]\r\nm-results-int8-[");
    for (size_t i = 0; i < size; i++) {
        char item[8];
        snprintf(item, sizeof item, i ? ",%d" : "%d", (int8_t)output[i]);
        put(item);
    }
    put("]\r\n");
}

static void report_counter(const char *name, uint64_t total) {
    char digits[24];
    reply("m-%s-%s", name, text_uint64(total / (uint64_t)timed_runs, digits));
}

/* one inference, its ticks added to *busy; the input is copied in first, as TFLM may reuse its memory */
static const char *run_once(uint64_t *busy) {
    if (model_set_input(input, input_loaded)) {
        /* a model that could not be set up says why (an operator missing, the arena exhausted) */
        const char *error = model_invoke();
        return error ? error : "input size does not match the model";
    }
    uint64_t start = th_ticks();
    const char *error = model_invoke();
    *busy += th_ticks() - start;
    return error;
}

static void infer(int count, char **words) {
    long runs = DEFAULT_RUNS, warmups = DEFAULT_WARMUPS;
    if (count > 1 && number(words[1], &runs)) { reply("e-[infer: not a number: %.40s]", words[1]); return; }
    if (runs <= 0) { reply("e-[Inference iterations must be >0]"); return; }
    if (count > 2 && number(words[2], &warmups)) { reply("e-[infer: not a number: %.40s]", words[2]); return; }
    if (warmups < 0) { reply("e-[Inference warmup must be >=0]"); return; }
    if (input_loaded != input_expected || !input_expected) { reply("e-[no complete input loaded]"); return; }
    if (platform_failure) { reply("e-[%s]", platform_failure); return; }
    const char *error = NULL;
    uint64_t busy = 0;
    reply("m-warmup-start-%ld", warmups);
    for (long i = 0; i < warmups && !error; i++) error = run_once(&busy);
    if (error) { reply("e-[%s]", error); return; }
    reply("m-warmup-done");
    reply("m-infer-start-%ld", runs);
    busy = 0;
    th_counters_reset();
    /* both timestamps are written after the loop, so writing the first is not timed */
    uint64_t start = th_ticks();
    for (long i = 0; i < runs && !error; i++) error = run_once(&busy);
    uint64_t end = th_ticks();
    if (error) { reply("e-[%s]", error); return; }
    char digits[24];
    reply("m-lap-us-%s", text_uint64(start / th_ticks_per_us(), digits));
    reply("m-lap-us-%s", text_uint64(end / th_ticks_per_us(), digits));
    reply("m-instructions-%s", text_uint64(busy / (uint64_t)runs, digits));
    timed_runs = runs;
    th_counters_report(report_counter);
    reply("m-infer-done");
    results();
}

static void end_run(int count, char **words) {
    long code = 0;
    if (count > 1 && number(words[1], &code)) { reply("e-[exit: not a number: %.40s]", words[1]); return; }
    th_exit((int)code);
}

static void dispatch(char *line) {
    char *words[WORDS_MAX] = {""};
    int count = split_words(line, words);
    const char *verb = words[0];
    if (!strcmp(verb, "name")) reply("m-name-dut-[udc-harness %s]", th_platform_name());
    else if (!strcmp(verb, "timestamp")) timestamp();
    else if (!strcmp(verb, "help")) help();
    else if (!strcmp(verb, "profile")) profile();
    else if (!strcmp(verb, "db")) db(count, words);
    else if (!strcmp(verb, "infer")) infer(count, words);
    else if (!strcmp(verb, "results")) results();
    else if (!strcmp(verb, "exit")) end_run(count, words);
    else reply("e-[Unknown command: %.40s]", verb);
    reply("m-ready");
}

void benchmark_main(const char *platform_error) {
    platform_failure = platform_error;
    input_shift = takes_shifted_input(UDC_MODEL_ID) ? 0x80 : 0;
    reply("m-timestamp-mode-performance");
    timestamp();
    reply("m-init-done");
    reply("m-ready");
    size_t length = 0;
    int overlong = 0;  /* the command outgrew the buffer: its bytes are dropped up to its '%' */
    for (;;) {
        int c = th_getchar();
        if (c < 0) continue;
        if (c == '%') {
            if (overlong) {
                reply("e-[command longer than %d characters]", COMMAND_MAX - 1);
                reply("m-ready");
            } else {
                command[length] = '\0';
                dispatch(command);
            }
            length = 0;
            overlong = 0;
        } else if (overlong || c == '\r' || c == '\n') {
            continue;
        } else if (length + 1 < COMMAND_MAX) {
            command[length++] = (char)c;
        } else {
            overlong = 1;
        }
    }
}
