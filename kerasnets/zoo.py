"""Imports every model family so that their builders register themselves."""
from kerasnets import (  # noqa: F401
    augshufflenet,
    condensenet,
    densenet,
    effcnet,
    g_ghostnet,
    ghostnet,
    hardnet,
    mgiad,
    mgic,
    mobilenet,
    resnet,
    shufflenet,
    shufflenetv2,
    threshnet,
    triplenet,
    vgg,
)
