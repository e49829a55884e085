"""Run report: report.md and report.html with tables and PNG plots, readable without the tool.

The HTML carries its images inline (data URIs), so it opens anywhere as one file; report.md
links the PNGs written beside it. Sections (`SECTIONS`): the headline metrics, whether the int8
model fits named microcontroller budgets, the int8 model's per-class accuracy and confusion
matrix on the test split, the per-layer profile, the training curves, accuracy against size and
latency (only beside rows measured on the same data set), and the stages.
"""
from __future__ import annotations

import base64
import csv
import glob
import json
import os
import re

import jinja2

from kerasnets.pipelines.files import write_atomic

RESULTS_GLOB = os.path.join("results", "*.csv")
# written by the run's export stage: the int8 model's confusion matrix on the test split
CONFUSION = "export/int8_confusion.json"

# id -> heading; every report has each of them (a section without data says why)
SECTIONS = {
    "metrics": "Metrics",
    "fits": "Fits a microcontroller?",
    "classes": "Per-class accuracy (int8, test split)",
    "layers": "Per-layer profile",
    "training": "Training curves",
    "tradeoff": "Accuracy vs size and latency",
    "stages": "Stages",
}
KIB, MIB = 1024, 1024 * 1024
# (memory, budget bytes, label): typical Cortex-M parts, from small to roomy
BUDGETS = (("RAM", 64 * KIB, "64 KiB"), ("RAM", 256 * KIB, "256 KiB"),
           ("flash", 256 * KIB, "256 KiB"), ("flash", MIB, "1 MiB"))
MAX_PLOTTED_LAYERS = 50
MAX_TABLED_CLASSES = 20

# metric key -> label; the manifest's other metrics follow under their own names
METRIC_LABELS = {
    "top1_fp32": "top-1 fp32", "top1_compressed": "top-1 compressed", "top1_qat": "top-1 QAT",
    "top1_int8": "top-1 int8", "int8_kb": "int8 .tflite", "fp16_kb": "fp16 .tflite",
    "fp32_kb": "fp32 .tflite", "dynamic_kb": "dynamic-range .tflite", "int16x8_kb": "int16x8 .tflite",
    "micro_model_bytes": "int8 model in firmware (no metadata)", "arena_bytes": "TFLite Micro arena (measured)",
    "arena_headroom_bytes": "arena headroom (kernel scratch)", "peak_activation_bytes": "peak int8 activations (profile)",
    "latency_ms": "host int8 latency (median)", "latency_ms_p90": "host int8 latency (p90)",
    "peak_rss_mb": "host peak RSS", "params": "parameters", "params_compressed": "parameters (compressed)",
    "macs": "MACs", "macs_compressed": "MACs (compressed)", "num_train": "training images",
    "num_test": "test images", "skipped_images": "skipped images", "machine": "benchmark machine",
    "train_precision": "training precision (Keras dtype policy)",
}

_MD = jinja2.Template("""# {{ title }}

{{ glance }}

Machine: {{ m.machine }}. Versions: {% for k, v in m.versions.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}.

## {{ sections.metrics }}

| metric | value |
|---|---|
{% for label, value in metrics %}| {{ label }} | {{ value }} |
{% endfor %}
## {{ sections.fits }}

{% if fits %}| budget | the model needs | fits? | margin |
|---|---|---|---|
{% for f in fits %}| {{ f.budget }} | {{ f.needs }} | {{ f.fits }} | {{ f.margin }} |
{% endfor %}
{% endif %}{{ fits_note }}

## {{ sections.classes }}

{% if classes %}![confusion matrix of the int8 model](confusion.png)

| class | test images | correct | accuracy |
|---|---|---|---|
{% for c in classes.rows %}| {{ c.name }} | {{ c.images }} | {{ c.correct }} | {{ c.accuracy }} |
{% endfor %}{% if classes.table %}
Confusion matrix (rows: true class, columns: predicted):

| true \\\\ predicted | {{ classes.names | join(' | ') }} |
|---|{% for _ in classes.names %}---|{% endfor %}
{% for name, row in classes.table %}| {{ name }} | {{ row | join(' | ') }} |
{% endfor %}{% endif %}
{% endif %}{{ classes_note }}

## {{ sections.layers }}

{% if layers %}![per-layer parameters, MACs and live int8 activation memory](layers.png)

{{ layers_note }}

| layer | type | output | params | MACs | live int8 memory |
|---|---|---|---|---|---|
{% for r in layers %}| {{ r.name }} | {{ r.type }} | {{ r.shape }} | {{ r.params }} | {{ r.macs }} | {{ r.live }} |
{% endfor %}{% else %}{{ layers_note }}
{% endif %}
## {{ sections.training }}

{% if curves %}![training curves](curves.png){% else %}{{ curves_note }}{% endif %}

## {{ sections.tradeoff }}

{% if tradeoff %}![accuracy vs int8 size and latency](tradeoff.png)

{% endif %}{{ tradeoff_note }}

## {{ sections.stages }}

| stage | seconds | artefacts |
|---|---|---|
{% for name, s in m.stages.items() %}| {{ name }} | {{ s.seconds }} | {{ s.artefacts | join(', ') }} |
{% endfor %}""")

_HTML = jinja2.Template("""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:64em;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.glance{display:flex;flex-wrap:wrap;gap:.6em;margin:.8em 0}
.card{background:#f4f6f8;border-radius:6px;padding:.5em .9em}.card b{display:block;font-size:1.3em}
.card span{color:#555;font-size:.85em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f6f8}
.yes{color:#176b2c;font-weight:bold}.no{color:#a11;font-weight:bold}
img{max-width:100%}.note{color:#555}.small{color:#666;font-size:.85em}
details{margin:.6em 0}
</style></head><body>
<h1>{{ title }}</h1>
<div class="glance">{% for value, label in cards %}<div class="card"><b>{{ value }}</b><span>{{ label }}</span></div>{% endfor %}</div>
<p class="small">Machine: {{ m.machine }}. Versions: {% for k, v in m.versions.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>

<h2 id="metrics">{{ sections.metrics }}</h2>
<table><tr><th>metric</th><th>value</th></tr>
{% for label, value in metrics %}<tr><td>{{ label }}</td><td>{{ value }}</td></tr>
{% endfor %}</table>

<h2 id="fits">{{ sections.fits }}</h2>
{% if fits %}<table><tr><th>budget</th><th>the model needs</th><th>fits?</th><th>margin</th></tr>
{% for f in fits %}<tr><td>{{ f.budget }}</td><td class="n">{{ f.needs }}</td>
<td class="{{ f.fits }}">{{ f.fits }}</td><td class="n">{{ f.margin }}</td></tr>
{% endfor %}</table>{% endif %}
<p class="note">{{ fits_note }}</p>

<h2 id="classes">{{ sections.classes }}</h2>
{% if classes %}<p><img src="{{ images['confusion.png'] }}" alt="confusion matrix of the int8 model"></p>
<table><tr><th>class</th><th>test images</th><th>correct</th><th>accuracy</th></tr>
{% for c in classes.rows %}<tr><td>{{ c.name }}</td><td class="n">{{ c.images }}</td><td class="n">{{ c.correct }}</td>
<td class="n">{{ c.accuracy }}</td></tr>
{% endfor %}</table>{% if classes.table %}
<details><summary>Confusion matrix as a table (rows: true class, columns: predicted)</summary>
<table><tr><th>true \\ predicted</th>{% for n in classes.names %}<th>{{ n }}</th>{% endfor %}</tr>
{% for name, row in classes.table %}<tr><th>{{ name }}</th>{% for v in row %}<td class="n">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table></details>{% endif %}{% endif %}
<p class="note">{{ classes_note }}</p>

<h2 id="layers">{{ sections.layers }}</h2>
{% if layers %}<p><img src="{{ images['layers.png'] }}" alt="per-layer parameters, MACs and live int8 activation memory"></p>
<p class="note">{{ layers_note }}</p>
<details><summary>Every layer ({{ layers | length }})</summary>
<table><tr><th>layer</th><th>type</th><th>output</th><th>params</th><th>MACs</th><th>live int8 memory</th></tr>
{% for r in layers %}<tr><td>{{ r.name }}</td><td>{{ r.type }}</td><td>{{ r.shape }}</td><td class="n">{{ r.params }}</td>
<td class="n">{{ r.macs }}</td><td class="n">{{ r.live }}</td></tr>
{% endfor %}</table></details>{% else %}<p class="note">{{ layers_note }}</p>{% endif %}

<h2 id="training">{{ sections.training }}</h2>
{% if curves %}<p><img src="{{ images['curves.png'] }}" alt="training curves"></p>{% else %}<p class="note">{{ curves_note }}</p>{% endif %}

<h2 id="tradeoff">{{ sections.tradeoff }}</h2>
{% if tradeoff %}<p><img src="{{ images['tradeoff.png'] }}" alt="accuracy vs int8 size and latency"></p>{% endif %}
<p class="note">{{ tradeoff_note }}</p>

<h2 id="stages">{{ sections.stages }}</h2>
<table><tr><th>stage</th><th>seconds</th><th>artefacts</th></tr>
{% for name, s in m.stages.items() %}<tr><td>{{ name }}</td><td class="n">{{ s.seconds }}</td>
<td>{{ s.artefacts | join(', ') }}</td></tr>
{% endfor %}</table>
</body></html>
""", autoescape=True)


# ---------------------------------------------------------------------------------------------
# numbers as a reader wants them


def _kib(count_bytes) -> str:
    return f"{count_bytes / MIB:.2f} MiB" if count_bytes >= MIB else f"{count_bytes / KIB:.1f} KiB"


def _count(value) -> str:
    value = float(value)
    if value >= 1e9:
        return f"{value / 1e9:.2f} G"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    return f"{int(value):,}"


def format_metric(key: str, value) -> str:
    """A manifest metric for reading: fractions as percentages (0.9387 -> 93.9%), sizes with units."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if key.startswith("top1_"):
        return f"{100 * value:.1f}%"
    if key.endswith("_kb"):
        return _kib(value * KIB)
    if key.endswith("_bytes"):
        return f"{_kib(value)} ({int(value):,} bytes)"
    if key.startswith("latency_ms"):
        return f"{value:.3f} ms"
    if key.endswith("_mb"):
        return f"{value:.1f} MB"
    if key.startswith(("params", "macs")):
        return _count(value)
    return f"{value:,}"


def _metric_rows(metrics: dict) -> list[tuple[str, str]]:
    ordered = [k for k in METRIC_LABELS if k in metrics] + [k for k in metrics if k not in METRIC_LABELS]
    return [(METRIC_LABELS.get(k, k), format_metric(k, metrics[k])) for k in ordered]


def _cards(metrics: dict) -> list[tuple[str, str]]:
    """The few figures at the top of the HTML report."""
    picks = (("top1_int8", "top-1 int8"), ("top1_fp32", "top-1 fp32"), ("int8_kb", "int8 model"),
             ("arena_bytes", "TFLite Micro arena"), ("latency_ms", "host int8 latency"), ("macs", "MACs"))
    cards = []
    for key, label in picks:
        if metrics.get(key) is not None:
            value = metrics[key]
            cards.append((_kib(value) if key == "arena_bytes" else format_metric(key, value), label))
    return cards


# ---------------------------------------------------------------------------------------------
# sections


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fits(metrics: dict) -> tuple[list[dict], str]:
    """One row per named budget (yes/no with the numbers) and the note saying what is counted."""
    ram = metrics.get("arena_bytes")
    if ram is not None:
        ram += metrics.get("arena_headroom_bytes") or 0
    flash = metrics.get("micro_model_bytes")
    if flash is None and metrics.get("int8_kb") is not None:
        flash = metrics["int8_kb"] * KIB
    needs = {"RAM": ram, "flash": flash}
    rows = []
    for memory, budget, label in BUDGETS:
        need = needs[memory]
        if need is None:
            continue
        margin = budget - need
        rows.append({"budget": f"{memory} {label}", "needs": _kib(need), "fits": "yes" if margin >= 0 else "no",
                     "margin": ("" if margin >= 0 else "-") + _kib(abs(margin))})
    missing = [m for m, need in needs.items() if need is None]
    note = ("RAM: the tensor arena the TFLite Micro interpreter measured for the int8 model plus headroom "
            "for kernel scratch buffers; the application's stack and buffers come on top. Flash: the int8 "
            "model as compiled into the firmware (without metadata); the TFLite Micro runtime and the "
            "application's code come on top.")
    if missing:
        note += f" Not measured in this run: {' and '.join(missing)} (the int8 export or micro stage was off)."
    return rows, note


def per_class(confusion: dict | None):
    """Per-class rows and the confusion table (small class counts only), or None."""
    if not confusion:
        return None
    names, matrix = confusion["classes"], confusion["matrix"]
    rows = []
    for name, counts in zip(names, matrix):
        images, correct = sum(counts), counts[names.index(name)]
        rows.append({"name": name, "images": images, "correct": correct,
                     "accuracy": f"{100 * correct / images:.1f}%" if images else "–"})
    table = list(zip(names, matrix)) if len(names) <= MAX_TABLED_CLASSES else None
    return {"rows": rows, "names": names, "table": table}


def _layer_rows(profile):
    return [{"name": r["name"], "type": r["type"], "shape": "x".join(str(d) for d in r["output_shape"]),
             "params": f"{r['params']:,}", "macs": _count(r["macs"]), "live": _kib(r["live_activation_bytes"])}
            for r in (profile or {}).get("layers", [])]


def plotted_layers(rows: list[dict], limit: int = MAX_PLOTTED_LAYERS) -> list[dict]:
    """The layers the per-layer plot shows, in execution order: every layer that computes or holds
    weights, or (when more than `limit`) the largest by MACs plus the largest by live memory."""
    candidates = [r for r in rows if r["macs"] or r["params"]] or rows
    if len(candidates) <= limit:
        return candidates
    by_memory = sorted(rows, key=lambda r: -r["live_activation_bytes"])[: max(limit // 5, 1)]
    by_macs = sorted(candidates, key=lambda r: -r["macs"])[: limit - len(by_memory)]
    keep = {id(r) for r in by_macs + by_memory}
    return [r for r in rows if id(r) in keep]


def _row_dataset(row: dict) -> str:
    """The data set a results row was measured on: its `dataset` column, or the `--dataset` of the
    command that wrote it (rows recorded before the column existed)."""
    if row.get("dataset"):
        return row["dataset"]
    found = re.search(r"--dataset[= ](\S+)", row.get("command") or "")
    return found.group(1) if found else ""


def result_points(results_glob: str, dataset: str):
    """(points, other data sets): (label, top1, int8_kb, latency_ms) of the results/*.csv rows
    measured on `dataset`, and the data sets of the rows left out."""
    points, others = [], set()
    for path in sorted(glob.glob(results_glob)):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    top1 = float(row.get("top1_int8") or "nan")
                    size = float(row.get("int8_kb") or "nan")
                    latency = float(row.get("latency_ms") or row.get("latency_ms_median") or "nan")
                except ValueError:
                    continue
                if top1 != top1 or size != size:
                    continue
                source = _row_dataset(row)
                if source != dataset:
                    others.add(source or "not recorded")
                    continue
                label = row.get("model", "") + (f" {row['method']}" if row.get("method") else "")
                points.append((label, top1, size, latency))
    return points, sorted(others)


# ---------------------------------------------------------------------------------------------
# plots


def _plot_curves(plt, curves):
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.6))
    for key, values in curves.items():
        target = ax_acc if "accuracy" in key else ax_loss if "loss" in key else None
        if target is not None:
            scale = 100 if target is ax_acc else 1
            target.plot(range(1, len(values) + 1), [scale * v for v in values], marker=".", label=key)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "top-1 accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return fig


def _plot_layers(plt, rows):
    """Horizontal bars, one row per layer named on the axis: params, MACs, live int8 memory."""
    fig, axes = plt.subplots(1, 3, sharey=True, figsize=(11, 1.2 + 0.22 * len(rows)))
    y = range(len(rows))
    for ax, (key, title, scale, color) in zip(axes, (
            ("params", "parameters (k)", 1e3, "#4c72b0"), ("macs", "MACs (M)", 1e6, "#dd8452"),
            ("live_activation_bytes", "live int8 activations (KiB)", KIB, "#55a868"))):
        ax.barh(y, [r[key] / scale for r in rows], color=color)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=.3)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_yticks(list(y))
    axes[0].set_yticklabels([r["name"] for r in rows], fontsize=7)
    axes[0].invert_yaxis()  # execution order, top to bottom
    return fig


def _plot_confusion(plt, confusion):
    names, matrix = confusion["classes"], confusion["matrix"]
    size = min(2.6 + 0.32 * len(names), 10)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    totals = [max(sum(row), 1) for row in matrix]
    shares = [[v / t for v in row] for row, t in zip(matrix, totals)]
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if len(names) <= MAX_TABLED_CLASSES:
        ticks = list(range(len(names)))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xticklabels(names, rotation=90 if max(len(n) for n in names) > 3 else 0)
        ax.set_yticklabels(names)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                if value:
                    ax.text(j, i, value, ha="center", va="center", fontsize=8,
                            color="white" if shares[i][j] > .5 else "black")
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"int8 model on {confusion['images']} test images")
    fig.colorbar(image, ax=ax, fraction=.046, label="share of the true class")
    return fig


def _plot_tradeoff(plt, metrics, points):
    """This run (red) among the results rows of the same data set, one colour per model."""
    fig, (ax_size, ax_latency) = plt.subplots(1, 2, figsize=(11, 3.8))
    models = sorted({label.split()[0] for label, *_ in points})
    for model in models:
        mine = [p for p in points if p[0].split()[0] == model]
        ax_size.scatter([p[2] for p in mine], [100 * p[1] for p in mine], s=14, alpha=.7, label=model)
        timed = [p for p in mine if p[3] == p[3]]
        ax_latency.scatter([p[3] for p in timed], [100 * p[1] for p in timed], s=14, alpha=.7, label=model)
    for ax, x_key in ((ax_size, "int8_kb"), (ax_latency, "latency_ms")):
        if metrics.get(x_key) is not None:
            ax.scatter(metrics[x_key], 100 * metrics["top1_int8"], color="red", marker="*", s=120, label="this run")
        ax.set_xscale("log")
        ax.grid(alpha=.3)
        ax.legend(fontsize=8)
    ax_size.set(xlabel="int8 .tflite (KiB, log)", ylabel="top-1 int8 (%)", title="accuracy vs size")
    ax_latency.set(xlabel="host int8 latency (ms, log)", ylabel="top-1 int8 (%)", title="accuracy vs latency")
    return fig


def _data_uri(path) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def write_report(run_dir: str, manifest: dict, results_glob: str = RESULTS_GLOB) -> list[str]:
    """Write the plots, report.md and report.html into `run_dir`; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, config = manifest.get("metrics", {}), manifest.get("config", {})
    dataset = config.get("data", {}).get("dataset", "")
    curves = _read_json(os.path.join(run_dir, "train", "curves.json"))
    profile = _read_json(os.path.join(run_dir, "train", "profile.json"))
    confusion = _read_json(os.path.join(run_dir, CONFUSION))
    layers = plotted_layers((profile or {}).get("layers", []))
    points, others = result_points(results_glob, dataset) if "top1_int8" in metrics else ([], [])

    plots = {"confusion.png": confusion and (_plot_confusion, confusion),
             "layers.png": layers and (_plot_layers, layers),
             "curves.png": curves and (_plot_curves, curves),
             "tradeoff.png": points and (_plot_tradeoff, metrics, points)}
    written = []
    for name, job in plots.items():
        path = os.path.join(run_dir, name)
        if not job:
            if os.path.exists(path):
                os.remove(path)  # a plot from an earlier run of this folder would mislead
            continue
        draw, *args = job
        fig = draw(plt, *args)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(name)

    all_layers = (profile or {}).get("layers", [])
    if not profile:
        layers_note = "No profile: the train stage has not run."
    elif len(layers) < len(all_layers):
        weighted = sum(1 for r in all_layers if r["macs"] or r["params"])
        layers_note = (f"The plot shows {len(layers)} of the model's {len(all_layers)} layers: "
                       + ("the largest by MACs and by live memory" if weighted > MAX_PLOTTED_LAYERS
                          else "those with weights or MACs")
                       + f"; the table lists every layer. Peak int8 activation memory: "
                       f"{_kib(profile['peak_activation_bytes'])} (profile; the arena adds the interpreter's "
                       "bookkeeping).")
    else:
        layers_note = f"Peak int8 activation memory: {_kib(profile['peak_activation_bytes'])}."
    if profile and config.get("compress", {}).get("method"):
        layers_note += " The profile is of the trained model before compression."
    if points:
        tradeoff_note = (f"Grey: the {len(points)} rows of {results_glob} measured on {dataset}; red: this run.")
    else:
        tradeoff_note = (f"Left out: no row of {results_glob} was measured on {dataset}"
                         + (f" (their data sets: {', '.join(others)})" if others else "")
                         + "; accuracies on different data sets do not share an axis."
                         if "top1_int8" in metrics else "Left out: this run has no int8 model.")
    fit_rows, fits_note = fits(metrics)
    title = f"Run report: {config.get('model', '?')} on {dataset}"
    context = dict(
        m=manifest, title=title, sections=SECTIONS, metrics=_metric_rows(metrics), cards=_cards(metrics),
        glance=" · ".join(f"{label} **{value}**" for value, label in _cards(metrics)),
        fits=fit_rows, fits_note=fits_note, classes=per_class(confusion),
        classes_note=(f"LiteRT on the int8 .tflite, {confusion['images']} test images." if confusion else
                      "Not measured: the run has no int8 export (or predates the confusion matrix)."),
        layers=_layer_rows(profile), layers_note=layers_note, curves=curves,
        curves_note="No training curves: the train stage has not run.", tradeoff=bool(points),
        tradeoff_note=tradeoff_note)
    images = {name: _data_uri(os.path.join(run_dir, name)) for name in written}
    write_atomic(os.path.join(run_dir, "report.md"), _MD.render(**context))
    write_atomic(os.path.join(run_dir, "report.html"), _HTML.render(images=images, **context))
    return ["report.md", "report.html", *written]
