// kerasnets firmware: runs the exported model with TensorFlow Lite Micro on each test input and
// checks the int8 outputs against the ones TFLite Micro's reference kernels gave on the host.
//
// Test inputs: kerasnets_inputs.h if the build provides one (kerasnets.micro.firmware_build
// writes it: several real images and their expected outputs), else the golden pairs that
// `kerasnets export --micro` writes (<name>_golden.h: real inputs whose outputs differ from each
// other and are not constant). Every line it prints starts with "kn-":
//   kn-model <name> arena <bytes>
//   kn-output <input> <offset> <int8 values...>      (32 values a line)
//   kn-ticks <input> <ticks of Invoke()> per-second <ticks per second>
//   kn-check <input> max-diff <LSB> PASS|FAIL
//   kn-tensor <tensor index> bytes <n> crc32 <hex> expected <hex> PASS|FAIL   (KN_TENSOR_CHECKSUMS)
//   kn-arena used <bytes> of <bytes>
// and then "~~~ALL TESTS PASSED~~~" or "~~~SOME TESTS FAILED~~~" like TFLite Micro's tests.
// Exit status: 0 when all outputs match (within KN_MAX_LSB_DIFFERENCE), else 1-5.
//
// -DKN_TENSOR_CHECKSUMS (for a bundle exported with tensor checksums) keeps every tensor
// (preserve_all_tensors, a larger arena) and, after the test inputs, runs kGoldenInputs[0] again
// and compares the CRC-32 of every activation tensor with the host's: the first FAIL names the
// first tensor a port computes differently.
#include <cstdint>
#include <cstdlib>

#include "kerasnets_model.h"  // generated: the model's data, op resolver, settings, golden pairs
#include "kn_platform.h"
#include "tensorflow/lite/micro/memory_helpers.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

#if __has_include("kerasnets_inputs.h")
#include "kerasnets_inputs.h"  // namespace kn_inputs: kCount, kInputs[][], kExpected[][]
#else
namespace kn_inputs {
constexpr int kCount = kn::kGoldenCount;
constexpr int kExpectedSize = kn::kGoldenOutputSize;
constexpr const auto& kInputs = kn::kGoldenInputs;
constexpr const auto& kExpected = kn::kGoldenOutputs;
}  // namespace kn_inputs
#endif

#ifndef KN_MAX_LSB_DIFFERENCE
#define KN_MAX_LSB_DIFFERENCE 0  // measured: CMSIS-NN and reference kernels agree bit for bit
#endif

#ifdef KN_TENSOR_CHECKSUMS
#ifndef KN_HAVE_TENSOR_CHECKSUMS
#error "KN_TENSOR_CHECKSUMS needs a bundle exported with tensor checksums (codegen.emit(..., tensor_checksums=True))"
#endif
constexpr int kArenaSize = kn::kTensorArenaSizeAllTensors;
constexpr bool kPreserveAllTensors = true;
#else
constexpr int kArenaSize = kn::kTensorArenaSize;
constexpr bool kPreserveAllTensors = false;
#endif

namespace {

alignas(16) uint8_t tensor_arena[kArenaSize];

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

#ifdef KN_TENSOR_CHECKSUMS
uint32_t Crc32(const uint8_t* data, size_t size) {  // zlib's CRC-32
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// Runs kGoldenInputs[0] and compares every activation tensor's CRC-32 with the host's; the
// number of tensors that differ, or -1 if Invoke fails.
int CheckTensorChecksums(tflite::MicroInterpreter& interpreter, TfLiteTensor* input) {
  for (int i = 0; i < kn::kInputSize; ++i) input->data.int8[i] = kn::kGoldenInputs[0][i];
  if (interpreter.Invoke() != kTfLiteOk) return -1;
  int failed = 0;
  for (const kn::TensorChecksum& expected : kn::kTensorChecksums) {
    const TfLiteEvalTensor* tensor = interpreter.GetTensor(expected.index);
    size_t bytes = 0;
    if (tensor == nullptr || tflite::TfLiteEvalTensorByteLength(tensor, &bytes) != kTfLiteOk) bytes = 0;
    const uint32_t crc = bytes ? Crc32(static_cast<const uint8_t*>(tensor->data.data), bytes) : 0;
    const bool ok = static_cast<int>(bytes) == expected.bytes && crc == expected.crc32;
    MicroPrintf("kn-tensor %d bytes %d crc32 %08lx expected %08lx %s", expected.index, static_cast<int>(bytes),
                static_cast<unsigned long>(crc), static_cast<unsigned long>(expected.crc32), ok ? "PASS" : "FAIL");
    if (!ok) ++failed;
  }
  return failed;
}
#endif

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
  tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kArenaSize, nullptr, nullptr,
                                       kPreserveAllTensors);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("kn-error AllocateTensors failed: raise the tensor arena (%d bytes)", kArenaSize);
    return 3;
  }
  MicroPrintf("kn-model %s arena %d", kn::kModelName, kArenaSize);
  TfLiteTensor* input = interpreter.input(0);
  const TfLiteTensor* output = interpreter.output(0);
  const int output_size = static_cast<int>(output->bytes);
  if (static_cast<int>(input->bytes) != kn::kInputSize || output_size != kn_inputs::kExpectedSize) {
    MicroPrintf("kn-error tensor sizes: input %d (expected %d), output %d (expected %d)",
                static_cast<int>(input->bytes), kn::kInputSize, output_size, kn_inputs::kExpectedSize);
    return 2;
  }
  bool passed = true;
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
    const bool pair_passed = diff <= KN_MAX_LSB_DIFFERENCE;
    passed = passed && pair_passed;
    MicroPrintf("kn-ticks %d %u%09u per-second %u", n, static_cast<unsigned>(ticks / 1000000000u),
                static_cast<unsigned>(ticks % 1000000000u),
                static_cast<unsigned>(kn_platform::TicksPerSecond()));
    MicroPrintf("kn-check %d max-diff %d %s", n, diff, pair_passed ? "PASS" : "FAIL");
  }
#ifdef KN_TENSOR_CHECKSUMS
  const int tensors_failed = CheckTensorChecksums(interpreter, input);
  if (tensors_failed < 0) {
    MicroPrintf("kn-error Invoke failed on golden input 0");
    return 4;
  }
  passed = passed && tensors_failed == 0;
#endif
  MicroPrintf("kn-arena used %u of %d", static_cast<unsigned>(interpreter.arena_used_bytes()), kArenaSize);
  MicroPrintf(passed ? "~~~ALL TESTS PASSED~~~" : "~~~SOME TESTS FAILED~~~");
  return passed ? 0 : 1;
}

}  // namespace

int main() {
  kn_platform::Init();
  kn_platform::Exit(Run());
}
