"""The machine label: ISA features parsed from /proc/cpuinfo texts in the kernel's x86 and aarch64
formats, and on this machine."""
import json
import os
import platform
import re

import pytest

from kerasnets.pipelines import machine
from kerasnets.tools import bench

# x86 lines as the Linux kernel prints them (one processor shown; the parser reads the first).
ZEN3_AVX2 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse \
sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl pni pclmulqdq ssse3 fma cx16 \
sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm bmi1 avx2 smep bmi2 erms \
invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves clzero vaes vpclmulqdq rdpid fsrm
bogomips\t: 4899.99

"""
ZEN4_VNNI = ZEN3_AVX2.replace("AMD EPYC 7B13", "AMD EPYC 9B14").replace(
    "sha_ni", "sha_ni avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi "
    "avx512_vbmi2 gfni avx512_vnni avx512_bitalg avx512_vpopcntdq")
SAPPHIRE_RAPIDS = ZEN4_VNNI.replace("avx512_vpopcntdq", "avx512_vpopcntdq avx_vnni amx_bf16 amx_tile amx_int8")
NEOVERSE_N1 = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

"""
NEOVERSE_V1 = NEOVERSE_N1.replace("asimddp ssbs", "asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs "
                                  "paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng")


def test_x86_without_vnni_names_avx2_and_fma_only():
    assert machine.parse_isa_features(ZEN3_AVX2) == ["avx2", "fma"]
    assert machine.parse_cpu_model(ZEN3_AVX2) == "AMD EPYC 7B13"  # not the numeric 'model' line


def test_x86_with_avx512_vnni_and_bf16():
    assert machine.parse_isa_features(ZEN4_VNNI) == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert machine.parse_isa_features(SAPPHIRE_RAPIDS) == [
        "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"]


def test_int8_dot_products_are_vnni_amx_and_arm_dotprod():
    """What decides whether the XNNPACK lowering multiplies zeros to save steps."""
    assert not machine.has_int8_dot_product(machine.parse_isa_features(ZEN3_AVX2))
    assert not machine.has_int8_dot_product([])  # unknown: the rewrites are left out
    for cpuinfo in (ZEN4_VNNI, SAPPHIRE_RAPIDS, NEOVERSE_N1):
        assert machine.has_int8_dot_product(machine.parse_isa_features(cpuinfo))


def test_aarch64_features_map_to_their_names():
    assert machine.parse_isa_features(NEOVERSE_N1) == ["dotprod"]
    # svei8mm / svebf16 are not i8mm / bf16: whole flags only
    assert machine.parse_isa_features(NEOVERSE_V1) == ["dotprod", "i8mm", "sve", "bf16"]
    assert machine.parse_cpu_model(NEOVERSE_N1) is None


def test_unreadable_or_empty_cpuinfo_gives_no_features():
    assert machine.parse_isa_features("") == []
    assert machine.machine_label("x86_64", "AMD EPYC", 2, []) == "x86_64 AMD EPYC (2 cores)"


def test_label_and_slug_format():
    features = machine.parse_isa_features(ZEN4_VNNI)
    assert (machine.machine_label("x86_64", "AMD EPYC 9B14", 2, features)
            == "x86_64 AMD EPYC 9B14 (2 cores; avx2 fma avx512f avx512_vnni avx512_bf16)")
    assert machine.slug(machine.machine_label("x86_64", "AMD EPYC 9B14", 2, [])) == "x86-64-amd-epyc-9b14-2-cores"


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs /proc/cpuinfo")
def test_this_machine_label_names_the_features_its_cpuinfo_lists():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        text = f.read()
    line = next(l for l in text.splitlines() if l.split(":")[0].strip() in ("flags", "Features"))
    listed = set(line.split(":", 1)[1].split())
    table = machine.X86_FEATURES if line.startswith("flags") else machine.ARM_FEATURES
    expected = [name for flag, name in table.items() if flag in listed]
    label = bench.machine_name()  # the benchmarks' entry point, re-exported from pipelines
    assert machine.isa_features() == expected
    assert label.startswith(f"{platform.machine()} ") and f"({os.cpu_count()} cores" in label
    for name in expected:
        assert f" {name}" in label.split("cores", 1)[1]
    # the file name drops the features and stays what earlier results files were named from
    slug = bench.machine_slug()
    assert slug.endswith(f"-{os.cpu_count()}-cores") and not any(f.replace("_", "-") in slug for f in expected)


def test_every_results_table_names_the_machine_of_every_row():
    """A figure without its machine cannot be compared (int8 speed differs ~10x with and without
    VNNI): every results/*.csv has a `machine` (or `device`) column whose every row names the CPU
    with its instruction-set features ("ISA not recorded" for rows measured before they were), and
    so does every committed run's manifest."""
    import csv
    from pathlib import Path

    tables = sorted((Path(__file__).resolve().parents[1] / "results").glob("*.csv"))
    assert tables
    for path in tables:
        with open(path, newline="", encoding="utf-8") as table:
            rows = list(csv.DictReader(table))
        column = next((c for c in ("machine", "device") if rows and c in rows[0]), None)
        assert column, f"{path.name} has no machine column"
        labels = {row[column] for row in rows}
        bare = sorted(label for label in labels if not re.search(r"\(\d+ cores; [^)]+\)", label))
        assert not bare, f"{path.name}: machines named without their instruction-set features: {bare}"
    for path in sorted((Path(__file__).resolve().parents[1] / "results" / "runs").glob("*/manifest.json")):
        label = json.loads(path.read_text())["machine"]
        assert re.search(r"\(\d+ cores; [^)]+\)", label), f"{path}: machine {label!r} without its features"
