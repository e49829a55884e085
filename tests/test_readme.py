"""The README's results tables are regenerated from results/*.csv between their markers."""
import csv

from kerasnets.tools import readme

COMPRESSION_ROWS = [
    {"model": "resnet20_cifar", "method": "none", "ratio": "0.0", "params": "272474", "macs": "40813184",
     "int8_kb": "302.9", "latency_ms": "1.333", "top1_fp32": "0.5645", "top1_int8": "0.569",
     "base_params": "272474", "base_macs": "40813184", "base_top1_fp32": "0.5645", "epochs": "4",
     "device": "test machine", "command": "python benchmarks/compression.py"},
    {"model": "resnet20_cifar", "method": "l1", "ratio": "0.5", "params": "68786", "macs": "10314048",
     "int8_kb": "94.1", "latency_ms": "0.4699", "top1_fp32": "0.497", "top1_int8": "0.4955",
     "base_params": "272474", "base_macs": "40813184", "base_top1_fp32": "0.5645", "epochs": "1",
     "device": "test machine", "command": "python benchmarks/compression.py"},
]


def test_tables_are_rewritten_between_their_markers_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    with open("results/compression.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COMPRESSION_ROWS[0]))
        writer.writeheader()
        writer.writerows(COMPRESSION_ROWS)
    text = ("# title\n<!-- compression:start -->\nstale table\n<!-- compression:end -->\nkept\n"
            "<!-- zoo:start -->\nzoo table without a csv\n<!-- zoo:end -->\n")
    (tmp_path / "README.md").write_text(text)

    readme.update("README.md")

    out = (tmp_path / "README.md").read_text()
    assert "stale table" not in out
    assert "| resnet20_cifar | l1 | 0.5 | 68,786 | 10.31M | 75% | 94.1 | 0.4699 | 49.7% | 49.5% | -6.8 pt | 1 |" in out
    assert "machine: test machine" in out
    assert out.startswith("# title\n") and "-->\nkept\n" in out
    assert "zoo table without a csv" in out  # no results file: its section is left as it was
