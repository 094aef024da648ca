"""train_invert's small CNN is reused only by runs that would train the same one."""

import logging
import os
from pathlib import Path

from pii.feedforward.classifier import checkpoint_path
from pii.feedforward.config import compose_train_invert as compose


def path_for(*overrides: str) -> Path:
    cfg = compose(["output_dir=unused", *overrides])
    return checkpoint_path(cfg.classifier, cfg.data, int(cfg.generator.resolution))


def test_the_cache_key_holds_everything_that_shapes_the_weights():
    default = path_for()
    for override in ["classifier.epochs=1", "classifier.lr=0.01", "classifier.seed=1", "classifier.batch_size=32",
                     "classifier.width=16", "data.split_seed=1", "data.test_fraction=0.3", "generator.resolution=16"]:
        assert path_for(override) != default, override
    assert path_for("seed=5", "schedule.steps=3", "conditions=[logits]") == default  # the generator's own settings
    assert path_for("classifier.checkpoint=/x/mine.safetensors") == Path("/x/mine.safetensors")


def test_tests_keep_out_of_the_shared_default_cache():
    assert path_for().parent == Path(os.environ["PII_CLASSIFIER_CACHE"])
    assert "outputs" not in path_for().parts


def test_a_reused_classifier_logs_its_held_out_accuracy(tmp_path, caplog):
    import torch

    from pii.feedforward import classifier as classifier_lib
    from pii.feedforward import data as data_lib

    cfg = compose(["output_dir=unused", "generator.resolution=8", "classifier.width=4", "classifier.epochs=1",
                   f"classifier.cache_dir={tmp_path}"])
    data = data_lib.build(cfg.data, 8)
    build = lambda: classifier_lib.build(cfg.classifier, None, data, 8, torch.device("cpu"), data_cfg=cfg.data)  # noqa: E731
    built, draws = [], []
    with caplog.at_level(logging.INFO, logger="pii.feedforward.classifier"):
        for _ in ("trained", "reused"):
            caplog.clear()
            torch.manual_seed(0)
            built.append(build())
            draws.append(torch.rand(3))
    (line,) = [r.getMessage() for r in caplog.records if "held-out accuracy" in r.getMessage()]
    assert f"from {tmp_path}" in line and "unknown" not in line  # the accuracy recorded when it was trained
    # training draws from its own seed: what the run draws next (G's weights) does not depend on the cache
    assert torch.equal(draws[0], draws[1])
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(built[0](x), built[1](x))
