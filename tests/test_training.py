"""The one small-classifier trainer (pii.models.training): its train/held-out split, and training that
raises held-out accuracy."""

import pytest
import torch

from pii.errors import ConfigError
from pii.models.training import accuracy, fit, split


def test_the_split_rounds_the_held_out_count_to_the_nearest_item_and_is_fixed_by_its_seed():
    train, test = split(1797, 0.2, seed=0)
    assert len(test) == 359 and sorted(train + test) == list(range(1797))
    assert split(1797, 0.2, seed=0) == (train, test) and split(1797, 0.2, seed=1) != (train, test)
    assert len(split(9, 0.3, seed=0)[1]) == 3  # 2.7 rounds up: truncating would hold out 2
    with pytest.raises(ConfigError, match="data.test_fraction=0.01 leaves no train or no test images out of 9"):
        split(9, 0.01, seed=0, key="data.test_fraction")


def test_fit_trains_the_network_inside_a_frozen_classifier():
    from pii.feedforward.classifier import SmallCNN, wrap

    torch.manual_seed(0)
    x = torch.rand(128, 3, 8, 8) * 0.2
    y = torch.arange(128) % 2
    x[y == 1, 0] += 0.8  # class 1: a red image
    clf = wrap(SmallCNN(2, width=4), 2, 8)
    assert accuracy(clf, x, y) <= 0.75
    fit(clf, x, y, epochs=5, shift=1, lr=0.01, batch_size=32)
    assert accuracy(clf, x, y) > 0.9
    assert not clf.net.training and not any(p.requires_grad for p in clf.net.parameters())
