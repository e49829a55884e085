// kerasnets firmware template: one inference of the exported model on its golden input, checked
// against the output TFLite Micro's reference kernels gave on the host, with the latency in
// cycles from the Cortex-M DWT cycle counter. Expects the files of `kerasnets export --micro`.
#include <cstdint>
#include <cstdlib>

#include "kerasnets_model.h"  // generated: includes the model's data, resolver, settings, golden
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

// CMSIS-NN's optimised int8 kernels may round 1-2 LSB differently from the reference kernels.
constexpr int kMaxLsbDifference = 2;

alignas(16) uint8_t tensor_arena[kn::kTensorArenaSize];

#if defined(__ARM_ARCH) && (__ARM_ARCH >= 7) && !defined(KN_NO_DWT)
volatile uint32_t& Register(uint32_t address) { return *reinterpret_cast<volatile uint32_t*>(address); }
void StartCycleCounter() {
  Register(0xE000EDFCu) |= (1u << 24);  // DEMCR.TRCENA: enable the DWT
  Register(0xE0001004u) = 0;            // DWT_CYCCNT
  Register(0xE0001000u) |= 1u;          // DWT_CTRL.CYCCNTENA
}
uint32_t Cycles() { return Register(0xE0001004u); }
#else
void StartCycleCounter() {}
uint32_t Cycles() { return 0; }  // no DWT (Cortex-M0/M0+ or host build)
#endif

}  // namespace

int main() {
  tflite::InitializeTarget();
  const tflite::Model* model = tflite::GetModel(kn::kModelData);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("model schema %d, expected %d", model->version(), TFLITE_SCHEMA_VERSION);
    return 1;
  }
  kn::OpResolver resolver;
  if (kn::RegisterOps(resolver) != kTfLiteOk) return 2;
  tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kn::kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("AllocateTensors failed: raise kTensorArenaSize (%d)", kn::kTensorArenaSize);
    return 3;
  }
  TfLiteTensor* input = interpreter.input(0);
  for (int i = 0; i < kn::kInputSize; ++i) input->data.int8[i] = kn::kGoldenInput[i];

  StartCycleCounter();
  const uint32_t start = Cycles();
  if (interpreter.Invoke() != kTfLiteOk) return 4;
  const uint32_t cycles = Cycles() - start;

  const TfLiteTensor* output = interpreter.output(0);
  int worst = 0, best_class = 0;
  for (int i = 0; i < kn::kCategoryCount; ++i) {
    const int diff = std::abs(output->data.int8[i] - kn::kGoldenOutput[i]);
    if (diff > worst) worst = diff;
    if (output->data.int8[i] > output->data.int8[best_class]) best_class = i;
  }
  MicroPrintf("kerasnets: %s: class %d (%s), max diff to golden %d LSB, %u cycles, arena used %u of %d",
              kn::kModelName, best_class, kn::kCategoryLabels[best_class], worst,
              static_cast<unsigned>(cycles), static_cast<unsigned>(interpreter.arena_used_bytes()),
              kn::kTensorArenaSize);
  MicroPrintf(worst <= kMaxLsbDifference ? "~~~ALL TESTS PASSED~~~" : "~~~SOME TESTS FAILED~~~");
  return worst <= kMaxLsbDifference ? 0 : 5;
}
