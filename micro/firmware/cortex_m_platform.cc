// Cortex-M board layer: Arm semihosting for the log and the exit status (QEMU:
// -semihosting-config enable=on,target=native; a debugger such as OpenOCD with
// "arm semihosting enable" on a real board), and the SysTick timer as TFLite Micro's clock.
// This file replaces tensorflow/lite/micro/cortex_m_generic/micro_time.cc, which needs a CMSIS
// device header (DCB/DWT) that a generic TFLite Micro tree does not have.
#include <cstdint>

#include "kn_platform.h"
#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#include "tensorflow/lite/micro/micro_time.h"

#ifndef KN_CPU_HZ
#define KN_CPU_HZ 25000000u  // MPS2 FPGA images (AN385/AN386): 25 MHz system clock
#endif

namespace {

constexpr uint32_t kSysWrite0 = 0x04, kSysExitExtended = 0x20;
constexpr uint32_t kApplicationExit = 0x20026;  // ADP_Stopped_ApplicationExit

uint32_t Semihost(uint32_t op, const void* arg) {
  register uint32_t r0 asm("r0") = op;
  register const void* r1 asm("r1") = arg;
  asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

volatile uint32_t& Reg(uint32_t address) { return *reinterpret_cast<volatile uint32_t*>(address); }
constexpr uint32_t kSysTickCtrl = 0xE000E010u, kSysTickLoad = 0xE000E014u, kSysTickVal = 0xE000E018u;
constexpr uint32_t kSysTickReload = 0x00FFFFFFu;  // the 24-bit maximum: one wrap per 2^24 ticks

volatile uint32_t g_wraps = 0;

void LogCallback(const char* text) { Semihost(kSysWrite0, text); }

}  // namespace

extern "C" {
void kn_semihosting_write(const char* text) { Semihost(kSysWrite0, text); }
[[noreturn]] void kn_semihosting_exit(int code) {
  const uint32_t block[2] = {kApplicationExit, static_cast<uint32_t>(code)};
  Semihost(kSysExitExtended, block);  // QEMU exits with `code`
  for (;;) asm volatile("wfi");
}
void SysTick_Handler(void) { g_wraps = g_wraps + 1; }
}

namespace kn_platform {

void Init() {
  RegisterDebugLogCallback(LogCallback);
  Reg(kSysTickLoad) = kSysTickReload;
  Reg(kSysTickVal) = 0;
  Reg(kSysTickCtrl) = 0x7;  // processor clock, wrap interrupt, enable
  // VAL reads 0 until the counter has loaded RELOAD (the next clock): wait, so that the first
  // Ticks() does not read 0 as a full period elapsed.
  while (Reg(kSysTickVal) == 0) {
  }
  g_wraps = 0;
}

uint64_t Ticks() {
  uint32_t wraps, value;
  do {  // a wrap between the two reads is taken as an interrupt at once: read again
    wraps = g_wraps;
    value = Reg(kSysTickVal);
  } while (wraps != g_wraps);
  return (static_cast<uint64_t>(wraps) << 24) + (kSysTickReload - value);
}

uint32_t TicksPerSecond() { return KN_CPU_HZ; }

void Exit(int code) { kn_semihosting_exit(code); }

}  // namespace kn_platform

namespace tflite {
uint32_t ticks_per_second() { return kn_platform::TicksPerSecond(); }
uint32_t GetCurrentTimeTicks() { return static_cast<uint32_t>(kn_platform::Ticks()); }
}  // namespace tflite
