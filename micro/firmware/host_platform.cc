// Host (PC) board layer: the log goes to stdout, ticks are microseconds of the steady clock.
// Replaces tensorflow/lite/micro/cortex_m_generic/micro_time.cc in a host build.
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "kn_platform.h"
#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#include "tensorflow/lite/micro/micro_time.h"

namespace {
void LogCallback(const char* text) { std::fputs(text, stdout); }
}  // namespace

namespace kn_platform {

void Init() { RegisterDebugLogCallback(LogCallback); }

uint64_t Ticks() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint32_t TicksPerSecond() { return 1000000u; }

void Exit(int code) {
  std::fflush(stdout);
  std::exit(code);
}

}  // namespace kn_platform

namespace tflite {
uint32_t ticks_per_second() { return kn_platform::TicksPerSecond(); }
uint32_t GetCurrentTimeTicks() { return static_cast<uint32_t>(kn_platform::Ticks()); }
}  // namespace tflite
