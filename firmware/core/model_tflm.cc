// The model side with TFLite Micro: the int8 model embedded in the image (section .model), its
// tensor arena in the platform's large SRAM (section .arena). Built only with a TFLM checkout.
#include <cstring>

#include "model_data.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

extern "C" {
#include "benchmark.h"
}

namespace {
alignas(16) uint8_t arena[MODEL_ARENA_BYTES] __attribute__((section(".arena")));
tflite::MicroInterpreter *interpreter = nullptr;
const char *setup_error = nullptr;
bool invoked = false;

// Every operator the harness's export emits (candidate ops conv, dwconv, dense, add, gap), and the
// ethos-u operator of a Vela-compiled model (registered only in a library built with the NPU).
using Resolver = tflite::MicroMutableOpResolver<13>;

bool setup() {
    if (interpreter || setup_error) return interpreter != nullptr;
    static Resolver resolver;
    resolver.AddConv2D();
    resolver.AddDepthwiseConv2D();
    resolver.AddFullyConnected();
    resolver.AddAdd();
    resolver.AddMean();
    resolver.AddAveragePool2D();
    resolver.AddReshape();
    resolver.AddSoftmax();
    resolver.AddPad();
    resolver.AddQuantize();
    resolver.AddDequantize();
    resolver.AddRelu6();
    resolver.AddEthosU();
    static tflite::MicroInterpreter instance(tflite::GetModel(model_data), resolver, arena, sizeof arena);
    if (instance.AllocateTensors() != kTfLiteOk) {
        setup_error = "AllocateTensors failed: arena too small or an operator is missing";
        return false;
    }
    interpreter = &instance;
    return true;
}
}  // namespace

extern "C" const char *model_name(void) { return MODEL_NAME; }
extern "C" size_t model_input_bytes(void) { return setup() ? interpreter->input(0)->bytes : 0; }
extern "C" size_t model_output_bytes(void) { return setup() && invoked ? interpreter->output(0)->bytes : 0; }
extern "C" size_t model_arena_bytes(void) { return setup() ? interpreter->arena_used_bytes() : 0; }

extern "C" int model_set_input(const uint8_t *data, size_t size) {
    if (!setup() || size != interpreter->input(0)->bytes) return 1;
    std::memcpy(interpreter->input(0)->data.int8, data, size);
    return 0;
}

extern "C" const char *model_invoke(void) {
    if (!setup()) return setup_error;
    if (interpreter->Invoke() != kTfLiteOk) return "Invoke failed";
    invoked = true;
    return nullptr;
}

extern "C" const uint8_t *model_output(void) {
    return setup() && invoked ? reinterpret_cast<const uint8_t *>(interpreter->output(0)->data.int8) : nullptr;
}
