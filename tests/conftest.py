"""Tests run offline: no W&B server, no model hub."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
# train_invert's classifier cache: the tests' quick classifiers never land in the shared default one
import tempfile  # noqa: E402

os.environ.setdefault("PII_CLASSIFIER_CACHE", tempfile.mkdtemp(prefix="pii-test-classifiers-"))
# precision=auto's timings (pii.models.calibration): the tests' runs never read or write the user's
os.environ["PII_CACHE"] = tempfile.mkdtemp(prefix="pii-test-cache-")

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pii import CONF_DIR

ROOT = Path(__file__).resolve().parent.parent


def compose_config(overrides=(), config_name: str = "config"):
    """The real config, composed as invert.py would, with `overrides`."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


TINY = ["schedule.stages=2", "schedule.steps=3", "augmentation.ensemble_size=2", "device=cpu"]


@pytest.fixture
def tiny_config(tmp_path):
    """A shrunk real config: the embedded Lite0 at 64 px, 2 stages of 3 steps, outputs in tmp_path."""

    def make(*overrides):
        return compose_config([*TINY, "model.input_size=64", f"output_dir={tmp_path}", *overrides])

    return make
