"""The one-command run (`kerasnets run`):
data -> train -> [compress] -> [QAT] -> export -> micro -> bench -> report.

Each stage is a plain function of the run config and the earlier stages' artefacts; this module
only composes them. Every stage writes into `runs/<name>/` and records in `manifest.json` its
inputs (config slice and upstream artefact hashes), its artefact hashes, metrics and the
library versions; a re-run skips a stage whose inputs are unchanged and whose artefacts are
intact, and `from_stage` forces a restart from a later stage.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time

from kerasnets.pipelines.files import write_atomic

log = logging.getLogger("kerasnets.run")

STAGES = ("data", "train", "compress", "qat", "export", "micro", "bench", "report")


def default_config():
    """The run configuration (every key validated; every key is also a command-line flag)."""
    from ml_collections import config_dict

    from kerasnets.pipelines import train

    return config_dict.ConfigDict({
        "name": "",
        "out": "",
        "model": "resnet8",
        "data": {"dataset": "digits", "input_size": 32, "channels": 0, "data_dir": "",
                 "strict": False, "test_fraction": 0.2, "seed": 0},
        "train": {**train.DEFAULTS, "epochs": 12, "batch_size": 64, "augment": ["crop"]},
        # method "" skips compression; ratio or target (e.g. "macs=5M", "peak_ram=64kB") as in
        # `kerasnets compress`; epochs of fine-tuning (or of training from scratch)
        "compress": {"method": "", "ratio": 0.0, "target": "", "epochs": 1, "from_scratch": False,
                     "strength": 0.0},
        "qat": {"enabled": False, "epochs": 1, "lr": 1e-4},
        # io_type: input/output of export/model_app.tflite, the RGB copy of the int8 model that the
        # Android Task Library and MediaPipe image classifiers take (uint8 | float | none);
        # app_int8_dot_product: its CPU has int8 dot products (see pipelines.xnnpack)
        "export": {"modes": ["int8"], "calibration_images": 200, "io_type": "uint8", "app_int8_dot_product": True},
        "micro": {"enabled": True, "max_arena": 0},
        "bench": {"targets": ["host"], "threads": 1, "runs": 50},
    })


def flatten(d, prefix=""):
    out = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _boolean(key: str, text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"config key {key!r} takes true or false; got {text!r}")


def apply_overrides(config, overrides: dict):
    """Set dotted keys ('train.epochs': 3); unknown keys raise with the list of known ones."""
    known = flatten(config.to_dict())
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(sorted(known))}")
        target, *rest = key.rsplit(".", 1)[::-1]
        node = config
        if rest:
            for part in rest[0].split("."):
                node = node[part]
        current = known[key]
        if isinstance(current, bool) and isinstance(value, str):
            value = _boolean(key, value)
        elif isinstance(current, (list, tuple)) and isinstance(value, str):
            value = [v for v in value.split(",") if v]
        elif isinstance(current, float) and isinstance(value, (int, str)):
            value = float(value)
        elif isinstance(current, int) and not isinstance(current, bool) and isinstance(value, str):
            value = int(value)
        node[target] = value
    return config


def load_config_file(config_file: str) -> dict:
    """Flattened dotted keys from a YAML or JSON run file."""
    import yaml

    named = f"`config_file={config_file}`"
    try:
        with open(config_file, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise ValueError(f"{named}: {error.strerror}") from None
    as_json = config_file.endswith(".json")
    try:
        content = json.loads(text) if as_json else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ValueError(f"{named} is not valid {'JSON' if as_json else 'YAML'}: {error}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{named} must hold a mapping of config keys")
    return flatten(content)


# ---------------------------------------------------------------------------------------------
# artefacts and the manifest


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _versions():
    import tensorflow as tf

    import kerasnets

    versions = {"kerasnets": kerasnets.__version__, "tensorflow": tf.__version__,
                "python": platform.python_version()}
    for package in ("tf_keras", "tensorflow_model_optimization", "ai_edge_litert"):
        try:
            module = __import__(package)
            versions[package] = getattr(module, "__version__", "")
        except ImportError:
            pass
    return versions


def _write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=1, default=str) + "\n")


class Run:
    """A run folder and its manifest."""

    def __init__(self, out_dir, config):
        self.dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "manifest.json")
        self.manifest = {"stages": {}, "metrics": {}}
        if os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    self.manifest = json.load(f)
            except (OSError, ValueError):
                log.warning("manifest.json is unreadable; every stage runs again")
        self.manifest.update(config=config.to_dict(), versions=_versions(), machine=_machine())

    def file(self, *parts):
        return os.path.join(self.dir, *parts)

    def is_fresh(self, stage, inputs_digest) -> bool:
        entry = self.manifest["stages"].get(stage)
        if not entry or entry.get("inputs") != inputs_digest:
            return False
        return all(os.path.exists(self.file(p)) and sha256(self.file(p)) == h
                   for p, h in entry.get("artefacts", {}).items())

    def record(self, stage, inputs_digest, artefacts, metrics, seconds):
        self.manifest["stages"][stage] = {
            "inputs": inputs_digest, "seconds": round(seconds, 2), "metrics": metrics,
            "artefacts": {p: sha256(self.file(p)) for p in artefacts},
        }
        self.manifest["metrics"].update(metrics)
        self.save()

    def artefact_hash(self, stage, name):
        return self.manifest["stages"].get(stage, {}).get("artefacts", {}).get(name)

    def save(self):
        _write_json(self.path, self.manifest)


def _machine():
    """CPU model, cores and ISA features (pipelines.machine.machine_name)."""
    from kerasnets.pipelines.machine import machine_name

    return machine_name()


# ---------------------------------------------------------------------------------------------
# stages


def _load_data(cfg):
    from kerasnets.pipelines import data as data_mod

    size = int(cfg.data.input_size) or None
    channels = int(cfg.data.channels) or None
    return data_mod.load(cfg.data.dataset, image_shape=(size, size, channels),
                         data_dir=cfg.data.data_dir or None, test_fraction=float(cfg.data.test_fraction),
                         seed=int(cfg.data.seed), strict=bool(cfg.data.strict))


def stage_data(run, cfg, ctx):
    data = ctx["data"]
    summary = {"source": data.source, "classes": data.classes, "num_train": data.num_train,
               "num_test": data.num_test, "image_shape": list(data.image_shape),
               "skipped_images": len(data.skipped)}
    _write_json(run.file("data.json"), {**summary, "skipped": data.skipped[:1000]})
    return ["data.json"], {"num_train": data.num_train, "num_test": data.num_test,
                           "skipped_images": len(data.skipped)}


def stage_train(run, cfg, ctx):
    import kerasnets
    from kerasnets.pipelines import train

    data = ctx["data"]

    def build():
        return kerasnets.create_model(cfg.model, input_shape=data.image_shape, classes=len(data.classes))

    result = train.fit(build, data, run.file("train"), config=dict(cfg.train), resume=ctx["resume"],
                       strategy=ctx.get("strategy"), verbose=ctx.get("verbose", 1))
    model = result["model"]
    stats = kerasnets.profile(model)
    top1 = train.evaluate(model, data)
    _write_json(run.file("train", "curves.json"), result["history"])
    _write_json(run.file("train", "profile.json"), stats)
    return ["train/last.keras", "train/curves.json", "train/profile.json"], {
        "top1_fp32": round(top1, 4), "params": stats["params"], "macs": stats["macs"],
        "peak_activation_bytes": stats["peak_activation_bytes"], "train_precision": result["precision"]}


def _load_model(path):
    from kerasnets.pipelines.saving import load_keras

    return load_keras(path)


def _trained_model_file(cfg) -> str:
    """The model the later stages start from: the compressed one when compression is on."""
    return "compress/last.keras" if cfg.compress.method else "train/last.keras"


def stage_compress(run, cfg, ctx):
    from kerasnets.pipelines import prune, train

    if not cfg.compress.method:
        return [], {}
    data = ctx["data"]
    model, summary = prune.compress(
        _load_model(run.file("train", "last.keras")), cfg.compress.method,
        ratio=float(cfg.compress.ratio) or None, target=cfg.compress.target or None, data=data,
        epochs=int(cfg.compress.epochs), strategy="scratch" if cfg.compress.from_scratch else "finetune",
        out_dir=run.file("compress"), config=dict(cfg.train), strength=float(cfg.compress.strength) or None)
    model.save(run.file("compress", "last.keras"))
    _write_json(run.file("compress", "summary.json"), summary)
    return ["compress/last.keras", "compress/summary.json"], {
        "top1_compressed": round(train.evaluate(model, data), 4), "params_compressed": summary["params_after"],
        "macs_compressed": summary["macs_after"]}


def stage_qat(run, cfg, ctx):
    from kerasnets.pipelines import data as data_mod, quantize, train

    data = ctx["data"]
    base = _load_model(run.file(_trained_model_file(cfg)))
    if not cfg.qat.enabled:
        return [], {}
    qat_cfg = {**dict(cfg.train), "epochs": int(cfg.qat.epochs), "lr": float(cfg.qat.lr), "warmup_epochs": 0}
    # ranges start where post-training quantisation would put them, on the images export calibrates
    # with: TFMOT's [-6, 6] start moves by an EMA of decay 0.999, ~half-way in a CIFAR-10 epoch
    calibration = data_mod.representative_images(data, int(cfg.export.calibration_images))
    result = train.fit(lambda: quantize.quantize_model(base, calibration=calibration), data, run.file("qat"),
                       config=qat_cfg, strategy=ctx.get("strategy"), verbose=ctx.get("verbose", 1))
    return ["qat/last.keras"], {"top1_qat": round(train.evaluate(result["model"], data), 4)}


def stage_export(run, cfg, ctx):
    from kerasnets.pipelines import convert, data as data_mod, metadata
    from kerasnets.tools import export
    from kerasnets.tools.report import CONFUSION

    data = ctx["data"]
    source = "qat/last.keras" if cfg.qat.enabled else _trained_model_file(cfg)
    model = _load_model(run.file(source))
    calibration = data_mod.representative_images(data, int(cfg.export.calibration_images))
    os.makedirs(run.file("export"), exist_ok=True)
    artefacts, metrics = [], {}
    info = metadata.ImageClassifierInfo(name=cfg.model, labels=tuple(data.classes),
                                        description=f"{cfg.model} trained on {cfg.data.dataset} by kerasnets run")
    for mode in cfg.export.modes:
        tflite = metadata.attach(export.shipped_tflite(model, mode, calibration), info)
        name = f"export/model_{mode}.tflite"
        with open(run.file(name), "wb") as f:
            f.write(tflite)
        artefacts.append(name)
        metrics[f"{mode}_kb"] = round(len(tflite) / 1024, 1)
        if mode == "int8":
            labels, predicted = convert.tflite_test_predictions(tflite, data)
            metrics["top1_int8"] = round(float((labels == predicted).mean()), 4)
            _write_json(run.file(CONFUSION), {
                "model": "int8", "classes": list(data.classes), "images": int(len(labels)),
                "matrix": convert.confusion_matrix(labels, predicted, len(data.classes))})
            artefacts.append(CONFUSION)
    if "int8" in cfg.export.modes and cfg.export.io_type != "none":
        if model.input_shape[-1] in (1, 3):  # apps take RGB: a gray model gets an RGB input
            artefacts.append(_write_app_model(run, cfg, model, calibration, info))
        else:
            log.warning("no app model: the model takes %d channels and image-classifier apps take RGB",
                        model.input_shape[-1])
    return artefacts, metrics


def _check_app_io_type(cfg):
    from kerasnets.pipelines import app_model

    if cfg.export.io_type != "none" and cfg.export.io_type not in app_model.IO_TYPES:
        raise ValueError(f"export.io_type must be one of {', '.join(app_model.IO_TYPES)} or none; "
                         f"got {cfg.export.io_type!r}")


def _write_app_model(run, cfg, model, calibration, info):
    from kerasnets.pipelines import app_model

    name = "export/model_app.tflite"
    with open(run.file(name), "wb") as f:
        f.write(app_model.app_tflite(model, calibration, info, cfg.export.io_type,
                                     int8_dot_product=bool(cfg.export.app_int8_dot_product)))
    return name


def stage_micro(run, cfg, ctx):
    import numpy as np

    from kerasnets.micro import codegen
    from kerasnets.pipelines import convert, metadata

    if not cfg.micro.enabled or "int8" not in cfg.export.modes:
        return [], {}
    with open(run.file("export", "model_int8.tflite"), "rb") as f:
        tflite = metadata.strip(f.read())  # labels go into the settings header, not into flash twice
    # the golden pairs of the firmware's self-test: picked from test images
    test_images = np.stack([image for image, _ in ctx["data"].test.take(16).as_numpy_iterator()])
    golden = convert.quantize_input(test_images.astype("float32"),
                                    convert.litert_interpreter(tflite).get_input_details()[0])
    report = codegen.emit(tflite, run.file("micro"), cfg.model, labels=ctx["data"].classes,
                          max_arena=int(cfg.micro.max_arena) or None, golden_inputs=golden)
    return [f"micro/{name}" for name in report["files"]], {"arena_bytes": report["arena_bytes"],
                                                           "arena_headroom_bytes": report["headroom_bytes"],
                                                           "micro_model_bytes": len(tflite)}


def stage_bench(run, cfg, ctx):
    from kerasnets.tools import bench

    if "host" not in cfg.bench.targets or "int8" not in cfg.export.modes:
        return [], {}
    with open(run.file("export", "model_int8.tflite"), "rb") as f:
        tflite = f.read()
    row = bench.host_row((cfg.model, tflite), threads=int(cfg.bench.threads), runs=int(cfg.bench.runs),
                         command="kerasnets run")
    _write_json(run.file("bench.json"), row)
    return ["bench.json"], {"latency_ms": row["latency_ms_median"], "latency_ms_p90": row["latency_ms_p90"],
                            "peak_rss_mb": row["peak_rss_mb"], "machine": row["machine"]}


def stage_report(run, cfg, ctx):
    from kerasnets.tools import report

    files = report.write_report(run.dir, run.manifest)
    return files, {}


_STAGE_FUNCTIONS = {"data": stage_data, "train": stage_train, "compress": stage_compress, "qat": stage_qat,
                    "export": stage_export, "micro": stage_micro, "bench": stage_bench, "report": stage_report}
# which config slices and upstream artefacts each stage depends on
_DEPENDS = {
    "data": (["data"], []),
    "train": (["data", "model", "train"], ["data"]),
    "compress": (["compress", "train"], ["data", "train"]),
    "qat": (["qat", "train", "compress"], ["train", "compress"]),
    "export": (["export", "qat", "compress"], ["train", "compress", "qat"]),
    "micro": (["micro", "model"], ["export"]),
    "bench": (["bench"], ["export"]),
    "report": ([], ["data", "train", "compress", "qat", "export", "micro", "bench"]),
}


def _inputs_digest(run, cfg, stage):
    slices, upstream = _DEPENDS[stage]
    config = {s: (cfg[s].to_dict() if hasattr(cfg[s], "to_dict") else cfg[s]) for s in slices}
    artefacts = {s: run.manifest["stages"].get(s, {}).get("artefacts") for s in upstream}
    return _digest({"config": config, "upstream": artefacts})


def _log_stage(stage: str, status: str) -> None:
    log.info("stage %s: %s", stage, status)


def _status(artefacts, metrics, seconds) -> str:
    """What a stage line says: its time, or `off` for a stage the config turns off."""
    return f"{seconds:.1f} s" if artefacts or metrics else "off"


def run_pipeline(cfg, *, from_stage: str | None = None, resume: bool = False, strategy=None,
                 verbose: int = 1, progress=_log_stage) -> dict:
    """Run (or bring up to date) every stage; returns the manifest.

    verbose: Keras' fit verbosity (1 progress bar, 2 one line per epoch, 0 silent).
    progress(stage, status) hears each stage as it ends: `12.3 s`, `off` (turned off by the
    config) or `skipped (unchanged)`; by default it logs at INFO.
    """
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"`from_stage` must be one of {', '.join(STAGES)}, got {from_stage!r}")
    import kerasnets

    kerasnets.model_info(cfg.model)  # unknown model names and settings fail before any work
    _check_app_io_type(cfg)
    name = cfg.name or f"{cfg.model}-{cfg.data.dataset.split(':')[0]}"
    out_dir = cfg.out or os.path.join("runs", name)
    run = Run(out_dir, cfg)
    run.manifest["out_dir"] = out_dir
    ctx = {"data": _load_data(cfg), "resume": resume, "strategy": strategy, "verbose": verbose}
    forced = STAGES[STAGES.index(from_stage):] if from_stage else ()
    for stage in STAGES:
        digest = _inputs_digest(run, cfg, stage)
        if stage not in forced and stage != "report" and run.is_fresh(stage, digest):
            progress(stage, "skipped (unchanged)")
            continue
        start = time.time()
        artefacts, metrics = _STAGE_FUNCTIONS[stage](run, cfg, ctx)
        seconds = time.time() - start
        run.record(stage, digest, artefacts, metrics, seconds)
        progress(stage, _status(artefacts, metrics, seconds))
    return run.manifest
