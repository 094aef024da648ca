"""The CUDA path (skipped without a GPU; scripts/gpu_check.sh runs these on one)."""

import pytest
import torch
from tiny import tiny_cfg

from pii import models
from pii.core.inversion import forward_backward, invert
from pii.models import device
from pii.run import build
from pii.run.runner import run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_inversion_on_cuda_raises_the_target_probability(tiny_config):
    # the embedded Lite0 at 64 px, 3 stages x 30 steps
    cfg = tiny_config("device=cuda", "verifier=none", "schedule.stages=3", "schedule.steps=30", "class_id=[980,1]")
    result = run(cfg)
    assert result.device.startswith("cuda")
    assert not torch.backends.cudnn.benchmark  # cudnn_benchmark=false: no autotuning at each stage's size
    for entry in result.classes:
        assert entry.probability > 10 * entry.start_probability, entry


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_chunked_equals_unchunked_gradient_on_cuda(tmp_path, precision):
    cuda = device.resolve_device("cuda")
    cfg = tiny_cfg(tmp_path, f"precision={precision}")
    classifier = models.build(cfg.model, cuda, precision=precision, channels_last=True, compile=False, fold=False)
    loss_fn = build.loss(cfg, classifier)
    image = torch.rand(2, 3, 32, 32, device=cuda)
    shifts = torch.rand(16, 3, 1, 1, device=cuda)
    grads = []
    for per_chunk in (16, 5):
        x = image.clone().requires_grad_(True)
        views = x.repeat_interleave(8, dim=0) * 2 - shifts
        targets = torch.tensor([1, 2], device=cuda).repeat_interleave(8)
        forward_backward(classifier, loss_fn, views, targets, x, per_chunk)
        grads.append(x.grad)
    # cudnn may pick other kernels for other batch sizes: equal up to their rounding
    cosine = torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0)
    assert cosine > (0.9999 if precision == "fp32" else 0.99), cosine


def test_auto_chunk_fits_the_free_memory(tmp_path, monkeypatch):
    cuda = device.resolve_device("cuda")
    classifier = models.build(tiny_cfg(tmp_path).model, cuda, **models.PLAIN)
    assert device.views_per_chunk("auto", classifier, 64, 32) == 64  # plenty of memory: all at once
    per_view = device._memory_per_view(classifier, 32, cuda)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (int(10 * per_view), 10**12))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 0)
    chunk = device.views_per_chunk("auto", classifier, 64, 32)  # room for ~7 views
    assert 1 <= chunk <= 10 * device.MEMORY_BUDGET


def test_compiled_path_runs_and_matches_eager(tmp_path):
    cuda = device.resolve_device("cuda")
    cfg = tiny_cfg(tmp_path, "precision=fp32", "schedule.stages=1")  # one stage: one shape to compile
    classifier = models.build(cfg.model, cuda, precision="fp32", channels_last=False, compile=True, fold=False)
    x = torch.rand(4, 3, 32, 32, device=cuda)
    torch.testing.assert_close(classifier(x), classifier(x, eager=True), rtol=1e-3, atol=1e-3)
    stages = build.stages(cfg)
    image = invert(classifier, [1, 2], build.augmentation(cfg), stages, build.loss(cfg, classifier),
                   build.optimizer(cfg), log_every=cfg.log_every, chunk=None, param=build.param(cfg, 2, cuda),
                   seed=cfg.seed)
    assert image.shape == (2, 3, 32, 32) and torch.isfinite(image).all()
