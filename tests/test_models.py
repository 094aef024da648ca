"""Every model entry builds (random weights, no network) and passes gradients to its input."""

from pathlib import Path

import pytest
import timm
import torch

from conftest import compose_config
from pii import models
from pii.cli import CONF_DIR
from pii.errors import ConfigError

MODEL_ENTRIES = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml") if p.stem != "timm")


@pytest.mark.parametrize("entry", MODEL_ENTRIES)
def test_model_entry_builds_and_runs_forward_backward(entry):
    cfg = compose_config([f"model={entry}", "model.weights=random", "output_dir=/x"]).model
    classifier = models.build(cfg)
    assert not classifier.training and not any(p.requires_grad for p in classifier.parameters())
    for layer in classifier.modules():  # timm zero-inits some heads (Mixer, ResMLP); trained ones never are
        if isinstance(layer, torch.nn.Linear) and not layer.weight.any():
            torch.nn.init.normal_(layer.weight, std=0.02)
    # a small first-stage image: fixed-size models resize it, CNNs take it as it is
    x = torch.rand(2, 3, 56, 56, requires_grad=True)
    logits = classifier(x)
    assert logits.shape == (2, cfg.num_classes)
    logits[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


IMAGENET_ENTRIES = [e for e in MODEL_ENTRIES if not e.startswith("digits_")]  # digits_*: our own small models


@pytest.mark.parametrize("entry", IMAGENET_ENTRIES)
def test_model_entry_matches_timms_preprocessing(entry):
    cfg = compose_config([f"model={entry}", "output_dir=/x"]).model
    ref = timm.models.get_pretrained_cfg(cfg.name)
    assert cfg.input_size == ref.input_size[-1] and cfg.fixed_size == ref.fixed_input_size
    assert list(cfg.mean) == pytest.approx(ref.mean) and list(cfg.std) == pytest.approx(ref.std)


def test_generic_timm_entry_reads_timms_config():
    cfg = compose_config(["model=timm", "model.name=vit_tiny_patch16_224", "model.weights=random", "output_dir=/x"]).model
    classifier = models.build(cfg)
    assert classifier.fixed_size and classifier.input_size == 224
    assert classifier(torch.rand(1, 3, 32, 32)).shape == (1, 1000)


def test_embedded_lite0_has_real_imagenet_weights():
    import skimage.data as skimage_data
    classifier = models.build(compose_config(["output_dir=/x"]).model)
    image = torch.from_numpy(skimage_data.coffee()).permute(2, 0, 1).float().div(255)[None]
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        probs = classifier(image).softmax(-1)
    assert probs.argmax().item() == 967 and probs[0, 967] > 0.5  # espresso


def test_local_weights_file_round_trip(tmp_path):
    cfg = compose_config(["model=timm", "model.name=resnet18", "model.weights=random", "output_dir=/x"]).model
    trained = models.build(cfg)
    path = tmp_path / "resnet18.pth"
    torch.save(trained.net.state_dict(), path)
    cfg.weights = str(path)
    loaded = models.build(cfg)
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(trained(x), loaded(x))
    import safetensors.torch as safetensors
    st_path = tmp_path / "resnet18.safetensors"
    safetensors.save_file(trained.net.state_dict(), st_path)
    cfg.weights = str(st_path)
    assert torch.allclose(trained(x), models.build(cfg)(x))


def test_unknown_timm_name_lists_how_to_fix():
    cfg = compose_config(["model=timm", "model.name=resnet_does_not_exist", "output_dir=/x"]).model
    with pytest.raises(ConfigError, match="unknown timm model 'resnet_does_not_exist'.*timm.list_models"):
        models.build(cfg)


def test_bf16_keeps_strided_depthwise_convs_in_fp32_on_cpu():
    # oneDNN's bf16 backward of a strided depthwise conv is ~6x slower than fp32 on CPU (pii.models)
    cfg = compose_config(["output_dir=/x"]).model  # Lite0, real weights
    fp32 = models.build(cfg, precision="fp32", channels_last=True)
    bf16 = models.build(cfg, precision="bf16", channels_last=True)
    strided = [m for m in bf16.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.stride[0] > 1]
    assert len(strided) == 4  # Lite0 drops resolution in four depthwise convs
    dtypes = []
    handles = [m.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype)) for m in strided]
    image = torch.rand(2, 3, 112, 112)
    grads = []
    for classifier in (fp32, bf16):
        x = image.clone().requires_grad_(True)
        classifier(x)[:, 980].sum().backward()
        grads.append(x.grad)
    for handle in handles:
        handle.remove()
    assert dtypes == [torch.float32] * 4
    cosine = torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0)
    assert cosine > 0.9  # bf16 follows the fp32 image gradient (0.94 here; all-bf16 gives 0.93)


def test_cpu_runs_keep_freed_memory():
    from pii import cpu
    from pii.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert cpu.keep_freed_memory()  # glibc (Linux): large blocks now come from the kept heap
    cpu.release_freed_memory()
