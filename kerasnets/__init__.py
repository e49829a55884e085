"""kerasnets: efficient CNNs from the literature as tf-keras functional models.

Importing the package selects Keras 2 (tf-keras) for TensorFlow before TensorFlow loads:
the TensorFlow Model Optimization Toolkit (pruning, QAT, clustering) supports Keras 2 only.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if os.environ["TF_USE_LEGACY_KERAS"] not in ("1", "true", "True"):
    raise ImportError(
        "kerasnets needs TF_USE_LEGACY_KERAS=1 (tf-keras); it is set to "
        f"{os.environ['TF_USE_LEGACY_KERAS']!r}. Unset it or set it to 1 before importing."
    )

from kerasnets.registry import (  # noqa: E402
    Variant, create_model, list_models, model_info, model_options, one_per_family, register_model,
    register_variants)
from kerasnets.profile import profile  # noqa: E402
# The families register themselves on the first look-up (list_models, create_model, model_info):
# importing them loads TensorFlow, and the command line sets its log levels before that.


# functions imported on first use: reading a Keras 3 model loads TensorFlow (and Keras 3 itself)
_LAZY = {"from_keras3": "kerasnets.keras3"}


def __getattr__(name):
    """The zoo's modules (`kerasnets.layers`, `kerasnets.resnet`, ...) and `from_keras3` as
    attributes, imported on use."""
    import importlib

    if name.startswith("_"):
        raise AttributeError(f"module 'kerasnets' has no attribute {name!r}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    try:
        return importlib.import_module(f"kerasnets.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"kerasnets.{name}":
            raise
        raise AttributeError(f"module 'kerasnets' has no attribute {name!r}") from None

__all__ = ["create_model", "list_models", "model_info", "model_options", "register_model",
           "register_variants", "Variant", "profile", "from_keras3"]
__version__ = "0.1.0"
