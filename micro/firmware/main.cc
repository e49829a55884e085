// kerasnets firmware: runs the exported model with TensorFlow Lite Micro on each test input and
// checks the int8 outputs against the ones TFLite Micro's reference kernels gave on the host.
//
// Test inputs: kerasnets_inputs.h if the build provides one (kerasnets.micro.firmware_build
// writes it: several real images and their expected outputs), else the golden pair that
// `kerasnets export --micro` writes (<name>_golden.h). Every line it prints starts with "kn-":
//   kn-model <name> arena <bytes>
//   kn-output <input> <offset> <int8 values...>      (32 values a line)
//   kn-ticks <input> <ticks of Invoke()> per-second <ticks per second>
//   kn-check <input> max-diff <LSB>
//   kn-arena used <bytes> of <bytes>
// and then "~~~ALL TESTS PASSED~~~" or "~~~SOME TESTS FAILED~~~" like TFLite Micro's tests.
// Exit status: 0 when all outputs match (within KN_MAX_LSB_DIFFERENCE), else 1-5.
#include <cstdint>
#include <cstdlib>

#include "kerasnets_model.h"  // generated: the model's data, op resolver, settings, golden pair
#include "kn_platform.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

#if __has_include("kerasnets_inputs.h")
#include "kerasnets_inputs.h"  // namespace kn_inputs: kCount, kInputs[][], kExpected[][]
#else
namespace kn_inputs {
constexpr int kCount = 1;
inline const int8_t* const kInputs[kCount] = {kn::kGoldenInput};
inline const int8_t* const kExpected[kCount] = {kn::kGoldenOutput};
constexpr int kExpectedSize = static_cast<int>(sizeof(kn::kGoldenOutput));
}  // namespace kn_inputs
#endif

#ifndef KN_MAX_LSB_DIFFERENCE
#define KN_MAX_LSB_DIFFERENCE 0  // measured: CMSIS-NN and reference kernels agree bit for bit
#endif

namespace {

alignas(16) uint8_t tensor_arena[kn::kTensorArenaSize];

void PrintOutput(int index, const int8_t* values, int count) {
  constexpr int kPerLine = 32;
  for (int start = 0; start < count; start += kPerLine) {
    char line[kPerLine * 5 + 1];
    int used = 0;
    for (int i = start; i < count && i < start + kPerLine; ++i) {
      used += MicroSnprintf(line + used, sizeof(line) - used, " %d", values[i]);
    }
    MicroPrintf("kn-output %d %d%s", index, start, line);
  }
}

int Run() {
  tflite::InitializeTarget();
  const tflite::Model* model = tflite::GetModel(kn::kModelData);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("kn-error model schema %d, expected %d", static_cast<int>(model->version()),
                TFLITE_SCHEMA_VERSION);
    return 2;
  }
  kn::OpResolver resolver;
  if (kn::RegisterOps(resolver) != kTfLiteOk) return 2;
  tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kn::kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("kn-error AllocateTensors failed: raise kTensorArenaSize (%d)", kn::kTensorArenaSize);
    return 3;
  }
  MicroPrintf("kn-model %s arena %d", kn::kModelName, kn::kTensorArenaSize);
  TfLiteTensor* input = interpreter.input(0);
  const TfLiteTensor* output = interpreter.output(0);
  const int output_size = static_cast<int>(output->bytes);
  if (static_cast<int>(input->bytes) != kn::kInputSize || output_size != kn_inputs::kExpectedSize) {
    MicroPrintf("kn-error tensor sizes: input %d (expected %d), output %d (expected %d)",
                static_cast<int>(input->bytes), kn::kInputSize, output_size, kn_inputs::kExpectedSize);
    return 2;
  }
  int worst = 0;
  for (int n = 0; n < kn_inputs::kCount; ++n) {
    for (int i = 0; i < kn::kInputSize; ++i) input->data.int8[i] = kn_inputs::kInputs[n][i];
    const uint64_t start = kn_platform::Ticks();
    const TfLiteStatus status = interpreter.Invoke();
    const uint64_t ticks = kn_platform::Ticks() - start;
    if (status != kTfLiteOk) {
      MicroPrintf("kn-error Invoke failed on input %d", n);
      return 4;
    }
    PrintOutput(n, output->data.int8, output_size);
    int diff = 0;
    for (int i = 0; i < output_size; ++i) {
      const int d = std::abs(output->data.int8[i] - kn_inputs::kExpected[n][i]);
      if (d > diff) diff = d;
    }
    if (diff > worst) worst = diff;
    MicroPrintf("kn-ticks %d %u%09u per-second %u", n, static_cast<unsigned>(ticks / 1000000000u),
                static_cast<unsigned>(ticks % 1000000000u),
                static_cast<unsigned>(kn_platform::TicksPerSecond()));
    MicroPrintf("kn-check %d max-diff %d", n, diff);
  }
  MicroPrintf("kn-arena used %u of %d", static_cast<unsigned>(interpreter.arena_used_bytes()),
              kn::kTensorArenaSize);
  const bool passed = worst <= KN_MAX_LSB_DIFFERENCE;
  MicroPrintf(passed ? "~~~ALL TESTS PASSED~~~" : "~~~SOME TESTS FAILED~~~");
  return passed ? 0 : 1;
}

}  // namespace

int main() {
  kn_platform::Init();
  kn_platform::Exit(Run());
}
