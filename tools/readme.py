"""Regenerate the README's results tables from results/*.csv (never typed by hand).

    python -m kerasnets.tools.readme [README.md]
"""
from __future__ import annotations

import csv
import os
import re
import sys

SECTIONS = {"zoo": "results/zoo.csv"}


def _fmt_count(value: str) -> str:
    number = float(value)
    return f"{number / 1e6:.2f}M" if number >= 1e5 else f"{number / 1e3:.1f}k"


def zoo_table(path: str) -> str:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    machines = sorted({r["machine"] for r in rows})
    lines = ["| model | input | params (published) | MACs (published) | size ok | int8 kB | TFLM arena B | "
             "int8 latency ms |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {_fmt_count(r['params'])} ({_fmt_count(r['published_params'])}) "
                     f"| {_fmt_count(r['macs'])} ({_fmt_count(r['published_macs'])}) | "
                     f"{'yes' if r['size_ok'] == 'True' else 'NO'} | {r['int8_kb']} | {r['arena_bytes']} | "
                     f"{r['latency_ms']} |")
    lines.append("")
    lines.append(f"From `{path}` (`kerasnets zoo`); latency: LiteRT, 1 thread, median; machine: "
                 f"{'; '.join(machines)}.")
    return "\n".join(lines)


def update(readme: str = "README.md") -> None:
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    for section, path in SECTIONS.items():
        if not os.path.exists(path):
            continue
        table = zoo_table(path)
        text = re.sub(rf"(<!-- {section}:start -->\n).*?(<!-- {section}:end -->)",
                      lambda m: m.group(1) + table + "\n" + m.group(2), text, flags=re.S)
    with open(readme, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    update(*sys.argv[1:])
