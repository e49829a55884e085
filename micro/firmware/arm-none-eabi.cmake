# CMake toolchain for the Arm Cortex-M4F with the GNU Arm toolchain (Debian: gcc-arm-none-eabi,
# libnewlib-arm-none-eabi). Pass it by absolute path: -DCMAKE_TOOLCHAIN_FILE=$PWD/.../arm-none-eabi.cmake
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
set(CMAKE_ASM_COMPILER arm-none-eabi-gcc)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(KN_ARCH_FLAGS "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16")
set(CMAKE_C_FLAGS_INIT "${KN_ARCH_FLAGS}")
set(CMAKE_CXX_FLAGS_INIT "${KN_ARCH_FLAGS}")
set(CMAKE_ASM_FLAGS_INIT "${KN_ARCH_FLAGS}")
set(CMAKE_EXE_LINKER_FLAGS_INIT "${KN_ARCH_FLAGS}")
