// Board layer of the kerasnets firmware: one implementation per target
// (cortex_m_platform.cc for Cortex-M boards with semihosting, host_platform.cc for a PC build).
#ifndef KERASNETS_FIRMWARE_KN_PLATFORM_H_
#define KERASNETS_FIRMWARE_KN_PLATFORM_H_

#include <cstdint>

namespace kn_platform {

// Starts the tick counter and registers the TFLite Micro debug-log callback (MicroPrintf output).
void Init();
// Monotonic 64-bit tick count; Ticks per second in TicksPerSecond().
uint64_t Ticks();
uint32_t TicksPerSecond();
// Ends the program with `code` (semihosting exit on a board, process exit on the host).
[[noreturn]] void Exit(int code);

}  // namespace kn_platform

#endif  // KERASNETS_FIRMWARE_KN_PLATFORM_H_
