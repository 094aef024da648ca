"""Classifiers and where their weights come from, and the device policy that runs them.

`build(cfg.model)` makes a frozen, normalising Classifier from a model config: timm or
torchvision by name, weights from an installed package, timm's hub or a local file.
"""

from pii.models.classifier import (
                                   PLAIN,
                                   SPEC_KEYS,
                                   Classifier,
                                   build,
                                   fold_batchnorm,
                                   model_spec,
)
from pii.models.weights import load_weights, resolve_weights

__all__ = ["PLAIN", "SPEC_KEYS", "Classifier", "build", "fold_batchnorm", "load_weights", "model_spec",
           "resolve_weights"]
