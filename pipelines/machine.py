"""The machine a figure was produced on: CPU model, core count and the instruction-set features
that decide kernel speed.

CPUs behind one model name ("AMD EPYC") differ ~10x in int8 speed (with and without AVX-512
VNNI), so every measured figure quotes `machine_name()`, which names those features; results
file names use `machine_slug()` (model and cores only), which stays stable across them.
Training asks `isa_features()` (e.g. whether the CPU has bf16).
"""
from __future__ import annotations

import os
import platform
import re

# /proc/cpuinfo flag -> the name quoted, in the order quoted. Only what changes which int8/fp32/
# bf16 kernels run: x86 AVX2+FMA (XNNPACK's baseline fast path), AVX-512, its VNNI int8 dot
# products and bf16, AVX-VNNI (the 256-bit form) and AMX tiles; Arm dot products, int8 matrix
# multiply, SVE and bf16.
X86_FEATURES = {"avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni",
                "avx512_bf16": "avx512_bf16", "avx_vnni": "avx_vnni", "amx_tile": "amx_tile",
                "amx_int8": "amx_int8", "amx_bf16": "amx_bf16"}
ARM_FEATURES = {"asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve", "bf16": "bf16"}
_CPUINFO = "/proc/cpuinfo"


def _read_cpuinfo() -> str:
    try:
        with open(_CPUINFO, encoding="utf-8") as info:
            return info.read()
    except OSError:
        return ""


def _first_field(cpuinfo: str, *keys: str) -> str | None:
    """Value of the first line keyed (before ':') by the first of `keys` that occurs."""
    fields = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return next((fields[key] for key in keys if key in fields), None)


def parse_isa_features(cpuinfo: str) -> list[str]:
    """The speed-deciding ISA features listed in a /proc/cpuinfo text: x86 'flags' or aarch64
    'Features' of the first processor, in X86_FEATURES / ARM_FEATURES order."""
    flags = _first_field(cpuinfo, "flags")
    table = X86_FEATURES
    if flags is None:
        flags, table = _first_field(cpuinfo, "features"), ARM_FEATURES
    present = set((flags or "").split())
    return [name for flag, name in table.items() if flag in present]


def parse_cpu_model(cpuinfo: str) -> str | None:
    """The CPU model name in a /proc/cpuinfo text (x86 'model name', some Arm kernels 'Hardware'
    or 'Model'), or None."""
    return _first_field(cpuinfo, "model name", "hardware", "model")


def isa_features() -> list[str]:
    """This machine's speed-deciding ISA features, e.g. ['avx2', 'fma', 'avx512f', 'avx512_vnni',
    'avx512_bf16']; [] where /proc/cpuinfo is unreadable."""
    return parse_isa_features(_read_cpuinfo())


# Features with int8 dot products (four int8 products summed into an int32 per lane per
# instruction): where int8 kernels outrun fp32 ones, and where multiplying by zeros to save steps
# pays (pipelines.xnnpack's packing and shuffle convolutions).
INT8_DOT_PRODUCT_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8", "dotprod", "i8mm")


def has_int8_dot_product(features: list[str] | None = None) -> bool:
    """Whether `features` (default: this machine's `isa_features()`) include int8 dot products."""
    return bool(set(INT8_DOT_PRODUCT_FEATURES) & set(isa_features() if features is None else features))


def _cpu() -> str:
    return parse_cpu_model(_read_cpuinfo()) or platform.processor() or platform.machine()


def machine_label(arch: str, cpu: str, cores: int | None, features: list[str]) -> str:
    """'x86_64 AMD EPYC (2 cores; avx2 fma avx512f avx512_vnni avx512_bf16)'."""
    return f"{arch} {cpu} ({cores} cores{'; ' + ' '.join(features) if features else ''})"


def machine_name() -> str:
    """e.g. 'x86_64 AMD EPYC 9B14 (2 cores; avx2 fma avx512f avx512_vnni avx512_bf16)': quoted
    beside every measured figure."""
    return machine_label(platform.machine(), _cpu(), os.cpu_count(), isa_features())


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60]


def machine_slug() -> str:
    """File-name part for this machine's results, from the CPU model and cores only (no ISA
    features), e.g. 'x86-64-amd-epyc-2-cores': short and stable, while the rows' machine column
    carries the full `machine_name()`."""
    return slug(machine_label(platform.machine(), _cpu(), os.cpu_count(), []))
