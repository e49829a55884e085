"""The README's results tables are regenerated from results/*.csv between their markers."""
import csv
import json

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


def test_run_section_quotes_the_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "results" / "runs" / "resnet8-cifar10-jpeg"
    folder.mkdir(parents=True)
    manifest = {"metrics": {"top1_fp32": 0.81, "top1_int8": 0.809, "int8_kb": 95.4, "arena_bytes": 55936,
                            "latency_ms": 0.08, "params": 78042, "macs": 12501632},
                "config": {"model": "resnet8", "data": {"dataset": "imagefolder:cifar10"},
                           "train": {"epochs": 30, "batch_size": 128, "augment": ["crop", "flip"]}},
                "machine": "test machine"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "README.md").write_text("<!-- run:start -->\n<!-- run:end -->\n")
    readme.update("README.md")
    out = (tmp_path / "README.md").read_text()
    assert "| 0.81 | 0.809 | 95.4 | 55936 | 0.08 | 78042 | 12501632 |" in out
    assert "30 epochs, batch 128, augment crop,flip" in out and "machine: test machine" in out


def test_the_committed_readme_tables_are_the_regenerated_ones(tmp_path, monkeypatch):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # the results/ files the tables come from
    copy = tmp_path / "README.md"
    copy.write_text((repo / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    readme.update(str(copy))
    assert copy.read_text(encoding="utf-8") == (repo / "README.md").read_text(encoding="utf-8"), \
        "README tables differ from results/*.csv: run python -m kerasnets.tools.readme"
