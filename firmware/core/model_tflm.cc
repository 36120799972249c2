// The model side with TFLite Micro: the int8 model embedded in the image (section .model) or read at run
// time from the model slot (MODEL_SLOT_ADDRESS, targets/runtime_image.py), its
// tensor arena in the platform's large SRAM (section .arena), and an op resolver generated from the
// model's own operators (model_ops.h, targets/op_resolver.py). Built only with a TFLM checkout.
//
// Why a model cannot run reaches the host in the e-[...] reply: an operator missing from the resolver
// is named, arena exhaustion is said as such, and TFLM's own messages (MicroPrintf, caught through
// the cortex_m_generic DebugLog callback) follow after "TFLM:".
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "model_data.h"
#include "model_ops.h"
#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tensorflow/lite/schema/schema_utils.h"

extern "C" {
#include "benchmark.h"
}

namespace {
alignas(16) uint8_t arena[MODEL_ARENA_BYTES] __attribute__((section(".arena")));
tflite::MicroInterpreter *interpreter = nullptr;
const char *setup_error = nullptr;
bool invoked = false;

// TFLM's messages since the last clear_tflm_log(), as one printable line ("; " between messages). The
// first messages are kept when they overflow: they name the cause, the later ones what failed with it.
char tflm_log[160];
size_t tflm_log_length = 0;

void clear_tflm_log() {
    tflm_log_length = 0;
    tflm_log[0] = '\0';
}

[[noreturn]] void halted();

void keep_tflm_message(const char *text) {
    if (std::strcmp(text, "HALTED") == 0) halted();  // TFLITE_ABORT: TFLM's AbortImpl says this, then spins
    for (; *text && tflm_log_length + 3 < sizeof tflm_log; text++) {
        char c = *text;
        bool gap = tflm_log_length == 0 || tflm_log[tflm_log_length - 1] == ' ';
        if (c == '\r' || c == '\n') {  // a message ends
            if (tflm_log_length && tflm_log[tflm_log_length - 1] != ' ') {
                tflm_log[tflm_log_length++] = ';';
                tflm_log[tflm_log_length++] = ' ';
            }
        } else if (c == ' ' || c == '\t') {
            if (!gap) tflm_log[tflm_log_length++] = ' ';
        } else {
            tflm_log[tflm_log_length++] = (c > ' ' && c < 127) ? c : '?';
        }
    }
    tflm_log[tflm_log_length] = '\0';
}

// The reason of the last failure: ours, then TFLM's messages.
char reason[224];

const char *fail(const char *format, ...) {
    while (tflm_log_length && (tflm_log[tflm_log_length - 1] == ' ' || tflm_log[tflm_log_length - 1] == ';')) {
        tflm_log[--tflm_log_length] = '\0';
    }
    va_list arguments;
    va_start(arguments, format);
    int length = vsnprintf(reason, sizeof reason, format, arguments);
    va_end(arguments);
    if (length >= 0 && (size_t)length < sizeof reason) {
        snprintf(reason + length, sizeof reason - length, "; TFLM: %s", tflm_log_length ? tflm_log : "no message");
    }
    return reason;
}

// TFLM aborted (a TFLITE_CHECK failed, say): rather than spin silently, answer the pending command
// with the reason and end the run (exit code 4), so the host reports it instead of a silent target.
void halted() {
    for (const char *c = "e-["; *c; c++) th_putchar(*c);
    for (const char *c = fail("TFLM aborted (TFLITE_ABORT)"); *c; c++) th_putchar(*c);
    for (const char *c = "]\r\nm-ready\r\n"; *c; c++) th_putchar(*c);
    th_exit(4);
    for (;;) {
    }
}

// The first operator of the model the resolver has no kernel for, or nullptr.
const char *missing_operator(const tflite::Model *model, const tflite::MicroOpResolver &resolver) {
    const auto *codes = model->operator_codes();
    for (size_t i = 0; codes != nullptr && i < codes->size(); i++) {
        const tflite::OperatorCode *code = codes->Get(i);
        const TFLMRegistration *registration = nullptr;
        if (tflite::GetRegistrationFromOpCode(code, resolver, &registration) == kTfLiteOk && registration) continue;
        tflite::BuiltinOperator builtin = tflite::GetBuiltinCode(code);
        if (builtin == tflite::BuiltinOperator_CUSTOM && code->custom_code() != nullptr) {
            return code->custom_code()->c_str();
        }
        return tflite::EnumNameBuiltinOperator(builtin);
    }
    return nullptr;
}

bool arena_exhausted() {
    return std::strstr(tflm_log, "Failed to allocate") || std::strstr(tflm_log, "Failed to resize");
}

bool setup() {
    if (interpreter || setup_error) return interpreter != nullptr;
    RegisterDebugLogCallback(keep_tflm_message);
    clear_tflm_log();
    static ModelOpResolver resolver;
    if (register_model_operators(resolver) != kTfLiteOk) {
        setup_error = fail("the op resolver refused an operator of %s", MODEL_OPERATORS);
        return false;
    }
#ifdef MODEL_SLOT_ADDRESS
    // a firmware that reads its model at run time: the host put it in the slot before the start
    const unsigned char *slot = reinterpret_cast<const unsigned char *>(MODEL_SLOT_ADDRESS);
    if (std::memcmp(slot, "UDCM", 4) != 0 || model_data_len == 0) {
        setup_error = fail("no model in the model slot at 0x%08x: the host loads one before the start "
                           "(QEMU -device loader, FVP --data)", (unsigned)MODEL_SLOT_ADDRESS);
        return false;
    }
#endif
    const tflite::Model *model = tflite::GetModel(model_data);
    const char *missing = missing_operator(model, resolver);
    if (missing) {
        setup_error = fail("operator %s is missing from the firmware's op resolver", missing);
        return false;
    }
    static tflite::MicroInterpreter instance(model, resolver, arena, sizeof arena);
    if (instance.AllocateTensors() != kTfLiteOk) {
        setup_error = arena_exhausted()
                          ? fail("tensor arena exhausted: the model needs more than the firmware's %u bytes",
                                 (unsigned)sizeof arena)
                          : fail("AllocateTensors failed");
        return false;
    }
    interpreter = &instance;
    return true;
}
}  // namespace

extern "C" const char *model_name(void) { return MODEL_NAME; }
extern "C" size_t model_input_bytes(void) { return setup() ? interpreter->input(0)->bytes : 0; }
extern "C" size_t model_output_bytes(void) { return setup() ? interpreter->output(0)->bytes : 0; }
extern "C" size_t model_arena_bytes(void) { return setup() ? interpreter->arena_used_bytes() : 0; }

extern "C" int model_set_input(const uint8_t *data, size_t size) {
    if (!setup() || size != interpreter->input(0)->bytes) return 1;
    std::memcpy(interpreter->input(0)->data.int8, data, size);
    return 0;
}

extern "C" const char *model_invoke(void) {
    if (!setup()) return setup_error;
    clear_tflm_log();
    if (interpreter->Invoke() != kTfLiteOk) return fail("Invoke failed");
    invoked = true;
    return nullptr;
}

extern "C" const uint8_t *model_output(void) {
    return setup() && invoked ? reinterpret_cast<const uint8_t *>(interpreter->output(0)->data.int8) : nullptr;
}

extern "C" float model_output_scale(void) { return setup() ? interpreter->output(0)->params.scale : 1.0f; }
extern "C" int model_output_zero_point(void) { return setup() ? interpreter->output(0)->params.zero_point : 0; }
