"""Trained weights shipped inside the package: `create_model(name, weights="cifar10")`.

Each file lives in `kerasnets/pretrained/` beside `WEIGHTS.json`, which lists for every model and
data set the file name, its SHA-256, the input shape and classes it was trained at, and the
accuracy it reached (with the command that produced it). A file is found through the package
folder (so it works from a wheel, an editable install or a copied tree), its hash is checked
before it is loaded, and the weights are loaded by layer name into a freshly built model: a file
that is missing, corrupt or made for another architecture is a ValueError that says which.
"""
from __future__ import annotations

import hashlib
import json
import os

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
INDEX = os.path.join(WEIGHTS_DIR, "WEIGHTS.json")


def index() -> dict:
    """{model: {dataset: entry}} of the shipped weights (entry: file, sha256, input_shape, ...)."""
    if not os.path.exists(INDEX):
        return {}
    with open(INDEX, encoding="utf-8") as f:
        return json.load(f)


def available(name: str | None = None) -> list[str]:
    """Models with shipped weights, or the data sets `name` has weights for."""
    table = index()
    return sorted(table.get(name, {})) if name else sorted(table)


def entry(name: str, weights: str) -> dict:
    """The index entry of `name` trained on `weights`, or a ValueError listing what exists."""
    table = index()
    if name not in table:
        have = ", ".join(f"{model} ({', '.join(sorted(sets))})" for model, sets in sorted(table.items()))
        raise ValueError(f"no shipped weights for {name!r}; `weights=` is available for: {have or 'none'}")
    if weights not in table[name]:
        raise ValueError(f"{name} has no {weights!r} weights; `weights=` may be "
                         f"{', '.join(repr(w) for w in sorted(table[name]))} (or None)")
    return table[name][weights]


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_path(name: str, weights: str) -> str:
    """The weights file of `name`/`weights` after its SHA-256 matched the index."""
    item = entry(name, weights)
    path = os.path.join(WEIGHTS_DIR, item["file"])
    if not os.path.exists(path):
        raise ValueError(f"the {weights} weights of {name} are listed but {path} is missing; "
                         "reinstall kerasnets")
    found = sha256(path)
    if found != item["sha256"]:
        raise ValueError(f"the {weights} weights file of {name} is corrupt: {path} has SHA-256 "
                         f"{found[:16]}..., the index expects {item['sha256'][:16]}...; reinstall kerasnets")
    return path


def check_head(name: str, weights: str, input_shape, classes, include_top: bool) -> None:
    """Trained weights fix the classes (and, with the classifier, the input): refuse others."""
    item = entry(name, weights)
    if include_top and classes != item["classes"]:
        raise ValueError(f"the {weights} weights of {name} have {item['classes']} classes, got "
                         f"classes={classes}; pass classes={item['classes']} or include_top=False")
    if tuple(input_shape)[2] != item["input_shape"][2]:
        raise ValueError(f"the {weights} weights of {name} take {item['input_shape'][2]} input channels, "
                         f"got input_shape={tuple(input_shape)}")


def load_into(model, name: str, weights: str) -> None:
    """Load the verified file by layer name; a layer missing or of another shape is a ValueError."""
    path = verified_path(name, weights)
    try:
        model.load_weights(path, skip_mismatch=False, by_name=True)
    except ValueError as error:
        raise ValueError(f"the {weights} weights of {name} do not fit this model ({error}); the file "
                         f"was made for {entry(name, weights)['input_shape']} inputs") from None
    missing = [layer.name for layer in model.layers if layer.weights and not _in_file(path, layer.name)]
    if missing:
        raise ValueError(f"the {weights} weights file of {name} has no weights for layers {missing[:5]}")


def _in_file(path: str, layer: str) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        return layer in f.attrs["layer_names"].astype(str)


CHECK_SEED = 0


def check_input(input_shape, count: int = 2):
    """The fixed inputs whose outputs the index records at save time (uniform in [-1, 1])."""
    import numpy as np

    return np.random.default_rng(CHECK_SEED).uniform(-1, 1, (count, *input_shape)).astype("float32")


def save(model, name: str, weights: str, *, metrics: dict, folder: str = WEIGHTS_DIR) -> str:
    """Write `model`'s weights as `<name>-<weights>.h5` and record them in the index with
    the outputs for `check_input` (so a load can be verified without the data set)."""
    os.makedirs(folder, exist_ok=True)
    file = f"{name}-{weights}.h5"  # the HDF5 layout by layer name (tf_keras reads it with by_name)
    path = os.path.join(folder, file)
    tmp = path + ".tmp.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)
    index_path = os.path.join(folder, "WEIGHTS.json")
    table = {}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            table = json.load(f)
    table.setdefault(name, {})[weights] = {
        "file": file, "sha256": sha256(path), "input_shape": list(model.input_shape[1:]),
        "classes": int(model.output_shape[-1]),
        "check_outputs": model.predict_on_batch(check_input(model.input_shape[1:])).round(5).tolist(),
        **metrics}
    with open(index_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    os.replace(index_path + ".tmp", index_path)
    return path
