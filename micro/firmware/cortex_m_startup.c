// Start-up code for an Arm Cortex-M3/M4/M7 (ARMv7-M) without a vendor SDK: vector table,
// Reset_Handler (FPU on, .data copied, .bss zeroed, C++ constructors run, main called, exit via
// semihosting) and a fault handler that reports the fault instead of hanging.
// Section symbols come from the linker script (mps2_an386.ld).
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];
extern void (*__preinit_array_start[])(void), (*__preinit_array_end[])(void);
extern void (*__init_array_start[])(void), (*__init_array_end[])(void);

int main(void);
void kn_semihosting_exit(int code) __attribute__((noreturn));
void kn_semihosting_write(const char* text);
void SysTick_Handler(void);

#define SCB_CPACR (*(volatile uint32_t*)0xE000ED88u)

void Reset_Handler(void) {
#if defined(__ARM_FP)
  SCB_CPACR |= 0xFu << 20;  // CP10 and CP11 full access: the FPU (hard-float ABI) needs it first
  __asm volatile("dsb\n\tisb" ::: "memory");
#endif
  for (uint32_t *src = _sidata, *dst = _sdata; dst < _edata;) *dst++ = *src++;
  for (uint32_t* dst = _sbss; dst < _ebss;) *dst++ = 0;
  for (void (**f)(void) = __preinit_array_start; f < __preinit_array_end; ++f) (*f)();
  for (void (**f)(void) = __init_array_start; f < __init_array_end; ++f) (*f)();
  kn_semihosting_exit(main());
}

static void Fault_Handler(void) {
  kn_semihosting_write("kn-fault CPU fault (HardFault, MemManage, BusFault or UsageFault)\n");
  kn_semihosting_exit(70);
}

static void Default_Handler(void) {
  kn_semihosting_write("kn-fault unexpected interrupt\n");
  kn_semihosting_exit(71);
}

// 16 system exceptions + 32 external interrupts (the MPS2 AN385/AN386 have 32).
__attribute__((section(".isr_vector"), used)) void (*const kn_vector_table[48])(void) = {
    (void (*)(void))_estack,  // initial stack pointer
    Reset_Handler,
    Default_Handler,  // NMI
    Fault_Handler,    // HardFault
    Fault_Handler,    // MemManage
    Fault_Handler,    // BusFault
    Fault_Handler,    // UsageFault
    0, 0, 0, 0,
    Default_Handler,  // SVCall
    Default_Handler,  // DebugMonitor
    0,
    Default_Handler,  // PendSV
    SysTick_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler,
};

#ifdef __cplusplus
}  // extern "C"
#endif
