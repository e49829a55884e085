"""Regenerate the README's results tables from results/*.csv (never typed by hand).

    python -m kerasnets.tools.readme [README.md]
"""
from __future__ import annotations

import csv
import json
import os
import re
import sys


def _fmt_count(value: str) -> str:
    number = float(value)
    return f"{number / 1e6:.2f}M" if number >= 1e5 else f"{number / 1e3:.1f}k"


def _figure_source(name: str) -> str:
    """Who produced a model's registered params/MACs (`ModelInfo.figure_source`)."""
    import kerasnets

    return kerasnets.model_info(name).figure_source if name in kerasnets.list_models() else "?"


def zoo_table(path: str) -> str:
    rows = _rows(path)
    machines = sorted({r["machine"] for r in rows})
    lines = ["| model | input | params (registered) | MACs (registered) | figures from | within 5% | int8 KiB | "
             "TFLM arena B | int8 latency ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {_fmt_count(r['params'])} ({_fmt_count(r['published_params'])}) "
                     f"| {_fmt_count(r['macs'])} ({_fmt_count(r['published_macs'])}) | "
                     f"{_figure_source(r['model'])} | {'yes' if r['size_ok'] == 'True' else 'NO'} | "
                     f"{r['int8_kb']} | {r['arena_bytes']} | {r['latency_ms']} |")
    lines.append("")
    lines.append(f"From `{path}` (`kerasnets zoo`); the registered figures come from the paper, the "
                 "official code, or (\"this implementation\") this code's own count where no source gives "
                 "one, and the registry test holds params and MACs within 5% of them; latency: LiteRT, 1 "
                 f"thread, median; int8 KiB = .tflite bytes / 1024; machine: {'; '.join(machines)}.")
    return "\n".join(lines)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# Header labels that carry a unit the column name does not (sizes are bytes / 1024).
LABELS = {"int8_kb": "int8 KiB"}


def _header(columns) -> str:
    return "| " + " | ".join(LABELS.get(c, c) for c in columns) + " |"


def plain_table(path: str, columns: list[str], *, note: str = "", machine: str = "machine") -> str:
    """`columns` of every row, as recorded, and the machines (column `machine`) that measured
    them, each row's own when there are several; `note` follows the file name in the footnote."""
    rows = _rows(path)
    machines = sorted({r[machine] for r in rows if r.get(machine)})
    if len(machines) > 1 and machine not in columns:
        columns = [*columns, machine]
    lines = [_header(columns), "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r[c] for c in columns) + " |" for r in rows]
    lines += ["", f"From `{path}`{note}; machine: {'; '.join(machines)}."]
    return "\n".join(lines)


def arena_table(path: str) -> str:
    """Profiler estimate vs TFLite Micro arena: a property of the model and of TFLite Micro, so the
    footnote names the tflite-micro package, not a machine."""
    columns = ["model", "input", "peak_activation_bytes", "arena_bytes", "arena_over_estimate"]
    rows = _rows(path)
    lines = [_header(columns), "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r[c] for c in columns) + " |" for r in rows]
    versions = sorted({r.get("tflite_micro") or "not recorded" for r in rows})
    machines = sorted({r.get("machine") or "not recorded" for r in rows})
    lines += ["", f"From `{path}`; the figures depend on the model and TFLite Micro, not the machine; "
              f"tflite-micro: {'; '.join(versions)}; measured on: {'; '.join(machines)}."]
    return "\n".join(lines)


def host_table(path: str) -> str:
    """Latency per model: fp32 Keras, fp32 and int8 TFLite, and the int8 speed-up over Keras."""
    rows = _rows(path)
    machines = sorted({r["machine"] for r in rows})
    # One file holds the rows of every machine with that CPU model and core count (the file name
    # drops the ISA features): a model's figures are only combined within one machine label.
    by_model = {}
    for r in rows:
        by_model.setdefault((r["model"], r["input"], r["machine"]), {})[(r["mode"], r["threads"])] = r
    several = len(machines) > 1
    lines = ["| model | input | " + ("machine | " if several else "") + "Keras fp32 ms (1 / 2 thr) | TFLite fp32 ms "
             "| TFLite int8 ms | int8 vs Keras (1 thr) | int8 GMAC/s (peak fraction) |",
             "|---|---|" + ("---|" if several else "") + "---|---|---|---|---|"]
    for (model, shape, machine), cells in sorted(by_model.items()):
        def ms(mode):
            return " / ".join(cells[(mode, t)]["latency_ms_median"] if (mode, t) in cells else "–" for t in ("1", "2"))
        keras_1, int8_1 = cells.get(("keras-fp32", "1")), cells.get(("int8", "1"))
        speedup = (f"{float(keras_1['latency_ms_median']) / float(int8_1['latency_ms_median']):.1f}x"
                   if keras_1 and int8_1 else "–")
        throughput = f"{int8_1['gmacs_per_s']} ({int8_1['peak_fraction']})" if int8_1 else "–"
        lines.append(f"| {model} | {shape} | " + (f"{machine} | " if several else "")
                     + f"{ms('keras-fp32')} | {ms('fp32')} | {ms('int8')} | {speedup} | {throughput} |")
    lines += ["", f"From `{path}` (`benchmarks/host.py`); median of repeated runs, XNNPACK for TFLite; "
              f"machine: {'; '.join(machines)}."]
    return "\n".join(lines)


def compression_table(path: str) -> str:
    """Each compressed row against its unpruned base: MACs removed and the fp32 top-1 change."""
    rows = _rows(path)
    lines = ["| model | method | ratio | params | MACs | MACs removed | int8 KiB | int8 latency ms | top-1 fp32 | "
             "top-1 int8 | fp32 vs base | epochs |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        removed = 1 - float(r["macs"]) / float(r["base_macs"])
        change = 100 * (float(r["top1_fp32"]) - float(r["base_top1_fp32"]))
        lines.append(f"| {r['model']} | {r['method']} | {r['ratio']} | {int(r['params']):,} | {_fmt_count(r['macs'])} | "
                     f"{removed:.0%} | {r['int8_kb']} | {r['latency_ms']} | {float(r['top1_fp32']):.1%} | "
                     f"{float(r['top1_int8']):.1%} | {change:+.1f} pt | {r['epochs']} |")
    machines = sorted({r["device"] for r in rows})
    lines += ["", f"From `{path}` (`benchmarks/compression.py`, command in the CSV); machine: {'; '.join(machines)}."]
    return "\n".join(lines)


def int8_blocks_table(path: str) -> str:
    """One line per model of results/int8-by-block.csv: its whole-model speedup, the share of its
    int8 time spent in blocks that gain less than 1.5x, and the blocks that take the most."""
    rows, by_model = _rows(path), {}
    for r in rows:
        by_model.setdefault((r["model"], r["machine"]), []).append(r)
    columns = ["model", "input", "fp32 ms", "int8 ms", "speedup", "int8 time in blocks < 1.5x",
               "most int8 time (share, speedup)", "conditions"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for (model, _), blocks in by_model.items():
        fp32, int8 = float(blocks[-1]["model_fp32_ms"]), float(blocks[-1]["model_int8_ms"])
        slow = sum(float(b["int8_share"]) for b in blocks if b["speedup"] and float(b["speedup"]) < 1.5)
        top = sorted(blocks, key=lambda b: -float(b["int8_share"]))[:3]
        lines.append(f"| {model} | {blocks[0]['input']} | {fp32} | {int8} | {fp32 / int8:.2f} | {slow:.0%} | "
                     + ", ".join(f"{b['ends_at']} {b['output_shape']} ({float(b['int8_share']):.0%}, {b['speedup']}x)"
                                 for b in top) + f" | {blocks[0]['conditions']} |")
    machines = sorted({r["machine"] for r in rows})
    lines += ["", f"From `{path}` (`benchmarks/int8_blocks.py`: LiteRT, XNNPACK, 1 thread, prefixes timed in "
              f"interleaved rounds; the per-block rows are in the CSV); machine: {'; '.join(machines)}."]
    return "\n".join(lines)


def _percent(value: str, empty: str) -> str:
    return f"{float(value):.2%}" if value else empty


def frontier_table(path: str) -> str:
    """Every trained row of the frontier, its margin over the reference trained with the same recipe
    and epochs (a distilled row's recipe is its own plus the teacher) and whether it fits the budget."""
    rows = _rows(path)
    reference = {(r["epochs"], r["recipe"]): r for r in rows if r["model"] == "resnet8"}
    # sizes depend on neither the recipe nor the epochs
    size = next((r for r in rows if r["model"] == "resnet8"), None)
    lines = ["| model | variant | recipe | epochs | params | MACs | int8 KiB | arena B | fits budget | top-1 fp32 | "
             "top-1 int8 (PTQ) | top-1 QAT int8 | QAT int8 vs ResNet-8 (same recipe) | latency ms | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = reference.get((r["epochs"], r["recipe"].split("+")[0]))
        fits = size and int(r["arena_bytes"]) <= int(size["arena_bytes"]) and float(r["int8_kb"]) <= float(size["int8_kb"])
        margin = (f"{100 * (float(r['top1_qat_int8']) - float(ref['top1_qat_int8'])):+.1f} pt"
                  if ref and r["top1_qat_int8"] and ref["top1_qat_int8"] else "–")
        lines.append(f"| {r['model']} | {r['variant']} | {r['recipe']} | {r['epochs']} | {int(r['params']):,} | {_fmt_count(r['macs'])} | "
                     f"{r['int8_kb']} | {r['arena_bytes']} | {'yes' if fits else 'NO'} | {float(r['top1_fp32']):.2%} | "
                     f"{float(r['top1_int8']):.2%} | {_percent(r['top1_qat_int8'], '– (teacher)')} | {margin} | "
                     f"{r['latency_ms']} | {r['seconds']} |")
    machines = sorted({r["device"] for r in rows})
    lines += ["", f"From `{path}` (`kerasnets frontier`, command in the CSV); top-1 on the 10,000 CIFAR-10 (JPEG) "
              "test images; the budget is ResNet-8's own int8 size and arena at the same epochs; latency: "
              f"LiteRT int8, 1 thread, median; machine: {'; '.join(machines)}."]
    return "\n".join(lines)


def frontier_rank_table(path: str) -> str:
    """The cheap ranking of the candidates that fit the budget, best first."""
    screen = path.replace("-rank", "-screen")
    return plain_table(path, ["model", "variant", "params", "int8_kb", "arena_bytes", "rank_top1", "rank_epochs",
                              "rank_images"], machine="device",
                       note=f": every candidate that passed the screen (`{screen}` lists all {len(_rows(screen))} "
                            "with the reason for each rejection), top-1 (fp32) on the first 5,000 test images")


def recipe_table(path: str) -> str:
    rows = _rows(path)
    return plain_table(path, ["option", "epochs", "config", "top1_fp32", "top1_fp32_flip_tta", "top1_int8",
                              "seconds", "precision", "conditions"],
                       note=f" (`benchmarks/recipe.py`, `{rows[0]['model'] if rows else ''}`, command in the CSV)")


RUN_METRICS = ("top1_fp32", "top1_int8", "int8_kb", "arena_bytes", "latency_ms", "params", "macs")


def run_table(path: str) -> str:
    """The headline metrics of a `kerasnets run` manifest, with what produced them."""
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    metrics, config = manifest["metrics"], manifest["config"]
    lines = [_header(RUN_METRICS), "|" + "---|" * len(RUN_METRICS),
             "| " + " | ".join(str(metrics.get(key, "–")) for key in RUN_METRICS) + " |", "",
             f"From `{path}`: `{config['model']}` on `{config['data']['dataset']}`, "
             f"{config['train']['epochs']} epochs, batch {config['train']['batch_size']}, augment "
             f"{','.join(config['train']['augment']) or 'none'}; latency: host int8, LiteRT; "
             f"machine: {manifest['machine']}."]
    return "\n".join(lines)


SECTIONS = {
    "run": ("results/runs/resnet8-cifar10-jpeg/manifest.json", run_table),
    "compression": ("results/compression.csv", compression_table),
    "zoo": ("results/zoo.csv", zoo_table),
    "condense": ("results/condense.csv", lambda p: plain_table(p, [
        "model", "epochs", "train_images", "top1_train_model", "top1_condensed", "top1_condensed_int8",
        "max_abs_diff", "params", "macs", "int8_kb"])),
    "condensed_index": ("results/condensed-index.csv", lambda p: plain_table(p, [
        "model", "input", "index", "int8_kib", "arena_bytes", "gather_ops", "tflite_micro"],
        note=" (`benchmarks/condensed_index.py`: BatchNorm-calibrated weights, sizes and arenas do not depend on "
             "trained values)")),
    "throughput": ("results/train-throughput.csv", lambda p: plain_table(p, [
        "model", "pipeline", "images_per_s", "epochs_timed", "batch_size", "ratio_vs_plain", "ratio_vs_in_memory",
        "conditions", "machine"])),
    "grouped_conv": ("results/grouped-conv-training.csv", lambda p: plain_table(p, [
        "model", "input", "batch_size", "grouped_convs", "step_s_keras", "step_s_by_groups", "speedup",
        "conditions"], note=" (`benchmarks/grouped_conv_training.py`, command in the CSV)")),
    "arena": ("results/arena-vs-profile.csv", arena_table),
    "frontier": ("results/frontier.csv", frontier_table),
    "frontier_rank": ("results/frontier-rank.csv", frontier_rank_table),
    "recipe": ("results/recipe.csv", recipe_table),
    "int8_speedup": ("results/int8-vs-fp32.csv", lambda p: plain_table(p, [
        "model", "input", "fp32_ms", "int8_ms", "int8_speedup", "fp32_lowered_ms", "int8_lowered_ms",
        "lowered_speedup", "int8_ops_outside", "lowered_ops_outside", "lowered_op_share", "dot_product_rewrites",
        "rounds", "conditions"],
        note=" (`benchmarks/int8_speedup.py`: LiteRT, XNNPACK, 1 thread, median of interleaved rounds)")),
    "int8_blocks": ("results/int8-by-block.csv", int8_blocks_table),
    "int8_ops": ("results/int8-by-op.csv", lambda p: plain_table(p, [
        "op", "shape", "fp32_us", "int8_us", "speedup", "int8_as_converted_us", "int8_shuffle_island_us",
        "int8_shuffle_conv_us", "rounds", "conditions", "machine"],
        note=" (`benchmarks/int8_ops.py`: LiteRT, XNNPACK, 1 thread, the op between two 1x1 convolutions less the "
             "same model without it, each the lowest median of interleaved rounds)")),
    "qat": ("results/qat.csv", lambda p: plain_table(p, [
        "model", "params", "top1_fp32", "top1_ptq_int8", "top1_qat_fakequant", "top1_qat_int8", "qat_int8_agreement",
        "epochs", "qat_epochs", "train_images", "test_images", "conditions"], machine="device",
        note=" (`benchmarks/qat.py`, command in the CSV)")),
}


def _host_file() -> str | None:
    """results/bench-host-<machine>.csv (the first, when several machines recorded one)."""
    files = sorted(f for f in os.listdir("results") if f.startswith("bench-host-")) if os.path.isdir("results") else []
    return os.path.join("results", files[0]) if files else None


def update(readme: str = "README.md") -> None:
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    sections = dict(SECTIONS)
    if _host_file():
        sections["host"] = (_host_file(), host_table)
    for section, (path, render) in sections.items():
        if not os.path.exists(path):
            continue
        table = render(path)
        text = re.sub(rf"(<!-- {section}:start -->\n).*?(<!-- {section}:end -->)",
                      lambda m: m.group(1) + table + "\n" + m.group(2), text, flags=re.S)
    with open(readme, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    update(*sys.argv[1:])
