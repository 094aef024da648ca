"""Feedforward inversion: the generator, the discriminator, the losses, the metrics."""

import pytest
import torch
from omegaconf import OmegaConf

from pii.errors import ConfigError
from pii.feedforward.config import TRAIN_INVERT_CONF_DIR
from pii.feedforward.discriminator import ProjectionDiscriminator
from pii.feedforward.evaluate import chance, psnr, retrieval, ssim
from pii.feedforward.generator import ConditionalBatchNorm, Generator
from pii.feedforward.losses import hinge_d, hinge_g


def small32(group: str) -> dict:
    """conf/train_invert/<group>/small32.yaml's arguments (without `_target_`, the class itself)."""
    values = OmegaConf.to_container(OmegaConf.load(f"{TRAIN_INVERT_CONF_DIR}/{group}/small32.yaml"))
    return {k: v for k, v in values.items() if k != "_target_"}


def tiny_generator(resolution=16, condition="logits", **changes) -> Generator:
    """small32 narrowed for speed: width 8, z 32, embedding 16."""
    args = {**small32("generator"), "width": 8, "z_dim": 32, "embed_dim": 16, "resolution": resolution, **changes}
    return Generator(10, **args, condition=condition, temperature=1.0)


@pytest.mark.parametrize("resolution,hierarchical", [(16, True), (32, False)])
def test_generator_and_discriminator_shapes(resolution, hierarchical):
    torch.manual_seed(0)
    G = tiny_generator(resolution, hierarchical=hierarchical)
    D = ProjectionDiscriminator(10, **{**small32("discriminator"), "width": 8}, resolution=resolution)
    logits = torch.randn(5, 10)
    images = G(logits, G.sample_z(5))
    assert images.shape == (5, 3, resolution, resolution)
    assert images.min() >= 0 and images.max() <= 1
    assert D(images, G.condition(logits)).shape == (5,)


def test_conditional_batch_norm_depends_on_the_condition():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm(4, cond_dim=6)
    x = torch.randn(3, 4, 5, 5)
    c = torch.randn(3, 6)
    assert not torch.allclose(cbn(x, c), cbn(x, c + 1))


def test_generator_output_depends_on_the_logits_not_only_the_class():
    torch.manual_seed(0)
    G = tiny_generator().eval()
    a = torch.randn(1, 10)
    a[0, 3] = 10.0
    b = a.clone()
    b[0, 7] += 2.0                       # same top-1 class (3), other logits moved
    z = G.sample_z(1)
    assert (G(a, z) - G(b, z)).abs().max() > 1e-3
    logits = torch.cat([a, b]).requires_grad_(True)
    G(logits, z.expand(2, -1)).sum().backward()
    assert logits.grad.abs().sum() > 0   # the image is a differentiable function of every logit

    onehot = tiny_generator(condition="onehot").eval()
    assert torch.equal(onehot(a, z), onehot(b, z))  # the baseline sees only the top-1 class


def test_hinge_losses_on_known_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # D: mean(relu(1 - [2, .5])) + mean(relu(1 + [-2, .5])) = 0.25 + 0.75
    assert hinge_d(real, fake).item() == pytest.approx(1.0)
    assert hinge_g(torch.tensor([1.0, -3.0])).item() == pytest.approx(1.0)


def test_bad_resolution_is_a_config_error():
    with pytest.raises(ConfigError, match="resolution=48 cannot be made"):
        tiny_generator(resolution=48)


def test_retrieval_chance_and_ssim():
    labels = torch.tensor([0, 0, 1, 1, 1])
    keys = torch.eye(5)
    assert retrieval(keys, keys, labels) == 1.0
    # swapping two same-class queries makes both of them miss
    assert retrieval(keys[[1, 0, 2, 3, 4]], keys, labels) == pytest.approx(3 / 5)
    assert chance(labels) == pytest.approx((2 * 0.5 + 3 / 3) / 5)
    x = torch.rand(2, 3, 16, 16)
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0])
    assert ssim(x, torch.rand(2, 3, 16, 16)).max() < 0.5


def reference_ssim(a, b, sigma=1.5):
    """SSIM as evaluate.py computed it by hand before torchmetrics: 11 px Gaussian window, valid positions."""
    coords = torch.arange(11, dtype=a.dtype) - 5
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(a.shape[1], 1, 11, 11).contiguous()

    def blur(t):
        return torch.nn.functional.conv2d(t, kernel, groups=a.shape[1])

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


@pytest.mark.parametrize("size", [11, 32, 40])
def test_psnr_and_ssim_match_the_earlier_hand_written_ones(size):
    torch.manual_seed(size)
    x = torch.rand(4, 3, size, size)
    for noise in (0.02, 0.1, 0.3):  # reconstructions from close to far
        y = (x + noise * torch.randn_like(x)).clamp(0, 1)
        mse = (x - y).pow(2).flatten(1).mean(1)
        assert psnr(y, x).tolist() == pytest.approx((10 * torch.log10(1 / mse)).tolist(), abs=1e-4)
        assert ssim(y, x).tolist() == pytest.approx(reference_ssim(y, x).tolist(), abs=1e-5)
    assert psnr(x, x).tolist() == [100.0] * 4  # exact: capped, so the mean over images stays finite
    far, near = (x + 0.3 * torch.randn_like(x)).clamp(0, 1), (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    assert (psnr(far, x) < psnr(near, x)).all() and (ssim(far, x) < ssim(near, x)).all()


def test_ssim_of_images_smaller_than_its_window_is_finite():
    x = torch.rand(2, 3, 8, 8)  # the tests' 8 px generators: the reflected map, averaged whole
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0])
    assert torch.isfinite(ssim(x, torch.rand(2, 3, 8, 8))).all()


def test_reconstruction_terms_vanish_on_the_source_and_pull_towards_it():
    from pii.feedforward.classifier import SmallCNN, wrap
    from pii.feedforward.losses import GeneratorLoss

    torch.manual_seed(0)
    clf = wrap(SmallCNN(10, width=8), 10, 8)
    loss = GeneratorLoss(clf, pixel_l1=1.0, feature_matching=1.0, logit_consistency=1.0, adversarial=1.0)
    real = torch.rand(4, 3, 8, 8)
    logits = clf(real)
    same = loss(real, real, logits)
    assert set(same) == {"pixel_l1", "feature_matching", "logit_consistency"}
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in same.values())
    fake = torch.rand(4, 3, 8, 8, requires_grad=True)
    terms = loss(fake, real, logits)
    assert all(v.item() > 0 for v in terms.values())
    for name, value in terms.items():  # each term alone gives fake a gradient
        (grad,) = torch.autograd.grad(value, fake, retain_graph=True)
        assert grad.abs().sum() > 0, name
    off = GeneratorLoss(clf, pixel_l1=0.0, feature_matching=0.0, logit_consistency=0.0, adversarial=1.0)
    assert off(fake, real, logits) == {}  # all weights 0: no terms


def test_every_train_invert_config_composes():
    from pathlib import Path

    from pii.feedforward.config import TRAIN_INVERT_CONF_DIR
    from pii.feedforward.config import compose_train_invert as compose

    root = Path(TRAIN_INVERT_CONF_DIR)
    groups = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert groups == ["classifier", "data", "discriminator", "generator", "loss", "schedule"]
    for group in [*groups, "logger"]:  # logger: invert.py's group (conf/logger), on train_invert's search path
        folder = root / group if group != "logger" else root.parent / group
        for option in sorted(p.stem for p in folder.glob("*.yaml")):
            extra = ["model=efficientnet_lite0"] if (group, option) == ("classifier", "model") else []
            cfg = compose([f"{group}={option}", "output_dir=/tmp/unused", *extra])
            assert cfg[group] is not None, (group, option)
    assert compose(["output_dir=/tmp/unused"]).loss.pixel_l1 == 0  # extra losses are off by default


def test_sync_batchnorm_converts_the_conditional_batch_norms():
    import copy

    from torch import nn

    from pii.feedforward.train import Dist, sync_batchnorm

    torch.manual_seed(0)
    G = tiny_generator()
    D = ProjectionDiscriminator(10, **{**small32("discriminator"), "width": 8}, resolution=16)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(G))
    assert all(isinstance(m.bn, nn.SyncBatchNorm) for m in synced.modules() if isinstance(m, ConditionalBatchNorm))
    assert isinstance(synced.out_bn, nn.SyncBatchNorm)
    assert synced.state_dict().keys() == G.state_dict().keys()  # checkpoints load into either
    logits, z = torch.randn(4, 10), torch.randn(4, 32)
    # outside a process group SyncBatchNorm is plain batch norm: the same images, condition included
    assert torch.allclose(synced(logits, z), G(logits, z), atol=1e-6)
    assert sync_batchnorm(G, D, Dist()) == (G, D)  # one process: nothing to convert
    with pytest.raises(ConfigError, match="sync_batchnorm=true needs CUDA"):
        sync_batchnorm(G, D, Dist(0, 2))
