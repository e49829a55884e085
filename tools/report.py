"""Run report: report.md and report.html with tables and PNG plots, readable without the tool."""
from __future__ import annotations

import csv
import glob
import json
import os

import jinja2

PLOTS = ("curves.png", "layers.png", "tradeoff.png")
RESULTS_GLOB = os.path.join("results", "*.csv")

_MD = jinja2.Template("""# Run report: {{ m.config.model }} on {{ m.config.data.dataset }}

Machine: {{ m.machine }}. Versions: {% for k, v in m.versions.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}.

## Metrics

| metric | value |
|---|---|
{% for k, v in m.metrics.items() %}| {{ k }} | {{ v }} |
{% endfor %}
## Stages

| stage | seconds | artefacts |
|---|---|---|
{% for name, s in m.stages.items() %}| {{ name }} | {{ s.seconds }} | {{ s.artefacts | join(', ') }} |
{% endfor %}
## Plots

![training curves](curves.png)

![per-layer MACs and live activation memory](layers.png)

![accuracy vs int8 size and latency](tradeoff.png)
""")

_HTML = jinja2.Template("""<!doctype html><html><head><meta charset="utf-8">
<title>{{ m.config.model }} on {{ m.config.data.dataset }}</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}
td,th{border:1px solid #999;padding:.2em .6em;text-align:left}img{max-width:100%}</style></head><body>
<h1>Run report: {{ m.config.model }} on {{ m.config.data.dataset }}</h1>
<p>Machine: {{ m.machine }}</p>
<h2>Metrics</h2><table><tr><th>metric</th><th>value</th></tr>
{% for k, v in m.metrics.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
<h2>Stages</h2><table><tr><th>stage</th><th>seconds</th><th>artefacts</th></tr>
{% for name, s in m.stages.items() %}<tr><td>{{ name }}</td><td>{{ s.seconds }}</td>
<td>{{ s.artefacts | join(', ') }}</td></tr>{% endfor %}</table>
<h2>Plots</h2>{% for p in plots %}<p><img src="{{ p }}" alt="{{ p }}"></p>{% endfor %}
</body></html>
""", autoescape=True)


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _plot_curves(ax_loss, ax_acc, curves):
    for key, values in (curves or {}).items():
        target = ax_acc if "accuracy" in key else ax_loss if "loss" in key else None
        if target is not None:
            target.plot(range(1, len(values) + 1), values, marker=".", label=key)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "top-1 accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()


def _plot_layers(ax_macs, ax_mem, profile):
    rows = [r for r in (profile or {}).get("layers", [])]
    compute = [r for r in rows if r["macs"]]
    ax_macs.bar(range(len(compute)), [r["macs"] / 1e6 for r in compute])
    ax_macs.set_title("MACs per conv/dense layer (M)")
    ax_macs.set_xlabel("layer (execution order)")
    ax_mem.plot([r["live_activation_bytes"] / 1024 for r in rows])
    ax_mem.set_title("live int8 activation memory (KiB)")
    ax_mem.set_xlabel("layer (execution order)")


def _result_points(results_glob):
    """(label, top1, int8_kb, latency_ms) from results/*.csv rows that carry them."""
    points = []
    for path in sorted(glob.glob(results_glob)):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    top1 = float(row.get("top1_int8") or "nan")
                    size = float(row.get("int8_kb") or "nan")
                    latency = float(row.get("latency_ms") or row.get("latency_ms_median") or "nan")
                except ValueError:
                    continue
                if top1 == top1 and size == size:
                    label = row.get("model", "") + (f" {row['method']}" if row.get("method") else "")
                    points.append((label, top1, size, latency))
    return points


def _plot_tradeoff(ax_size, ax_latency, metrics, points):
    for label, top1, size, latency in points:
        ax_size.scatter(size, top1, color="grey", s=12)
        if latency == latency:
            ax_latency.scatter(latency, top1, color="grey", s=12)
    if "top1_int8" in metrics and "int8_kb" in metrics:
        ax_size.scatter(metrics["int8_kb"], metrics["top1_int8"], color="red", s=40, label="this run")
        ax_size.legend()
        if "latency_ms" in metrics:
            ax_latency.scatter(metrics["latency_ms"], metrics["top1_int8"], color="red", s=40, label="this run")
            ax_latency.legend()
    ax_size.set(xlabel="int8 .tflite (KiB)", ylabel="top-1 int8", title="accuracy vs size")
    ax_latency.set(xlabel="host int8 latency (ms)", ylabel="top-1 int8", title="accuracy vs latency")


def write_report(run_dir: str, manifest: dict, results_glob: str = RESULTS_GLOB) -> list[str]:
    """Write the plots, report.md and report.html into `run_dir`; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {
        "curves.png": (_plot_curves, _read_json(os.path.join(run_dir, "train", "curves.json"))),
        "layers.png": (_plot_layers, _read_json(os.path.join(run_dir, "train", "profile.json"))),
    }
    for name, (draw, payload) in figures.items():
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        draw(*axes, payload)
        fig.tight_layout()
        fig.savefig(os.path.join(run_dir, name), dpi=90)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    _plot_tradeoff(*axes, manifest.get("metrics", {}), _result_points(results_glob))
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "tradeoff.png"), dpi=90)
    plt.close(fig)
    with open(os.path.join(run_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(_MD.render(m=manifest))
    with open(os.path.join(run_dir, "report.html"), "w", encoding="utf-8") as f:
        f.write(_HTML.render(m=manifest, plots=PLOTS))
    return ["report.md", "report.html", *PLOTS]
