"""Imports every model family so that their builders register themselves."""
from kerasnets import (  # noqa: F401
    densenet,
    ghostnet,
    hardnet,
    mobilenet,
    resnet,
    shufflenet,
    shufflenetv2,
    vgg,
)
