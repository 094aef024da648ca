"""Every model entry builds (random weights, no network) and passes gradients to its input."""

import platform
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from pii import CONF_DIR, models
from pii.run import build
from pii.errors import ConfigError

MODEL_ENTRIES = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml") if p.stem != "timm")


@pytest.mark.parametrize("entry", MODEL_ENTRIES)
def test_model_entry_builds_and_runs_forward_backward(entry):
    cfg = compose_config([f"model={entry}", "model.weights=random", "output_dir=/x"]).model
    classifier = models.build(cfg, "cpu", **models.PLAIN)
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

IMAGENET = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
HALF = [0.5] * 3, [0.5] * 3
# (input_size, fixed_size, mean, std) that each entry's yaml spelled out before they were read from timm
SPECS = {
    "convit_tiny": (224, True, *IMAGENET), "deit": (224, True, *IMAGENET),
    "efficientnet_lite0": (224, False, *HALF), "efficientnet_lite2": (260, False, *HALF),
    "mixer_b16": (224, True, *HALF), "pit": (224, True, *IMAGENET), "resmlp_36": (224, True, *IMAGENET),
    "resnet50": (224, False, *IMAGENET), "swin": (224, True, *IMAGENET), "twins_pcpvt": (224, True, *IMAGENET),
    "vit_b32": (224, True, *HALF), "resnet50_robust": (224, False, *IMAGENET), "inception_v3_adv": (299, True, *HALF),
    # models trained here (scripts/digits_claim.py): the yaml still says all, timm cannot know
    "digits_cnn": (32, False, *HALF), "digits_judge": (32, False, *HALF), "digits_mixer": (32, True, *HALF),
    "digits_vit": (32, True, *HALF),
}


def test_every_model_entry_has_its_expected_spec():
    assert sorted(SPECS) == MODEL_ENTRIES


@pytest.mark.parametrize("entry", MODEL_ENTRIES)
def test_model_entry_resolves_to_the_same_preprocessing_as_before(entry):
    spec = models.model_spec(compose_config([f"model={entry}", "output_dir=/x"]).model)
    size, fixed, mean, std = SPECS[entry]
    assert (spec["input_size"], spec["fixed_size"]) == (size, fixed)
    assert spec["mean"] == pytest.approx(mean) and spec["std"] == pytest.approx(std)


# what an ImageNet entry sets beyond timm's values, and why: Inception-v3 cannot take a zoom stage under 75 px
SET_HERE = {"inception_v3_adv": {"fixed_size": True}}


@pytest.mark.parametrize("entry", IMAGENET_ENTRIES)
def test_imagenet_entries_leave_preprocessing_to_timm(entry):
    cfg = compose_config([f"model={entry}", "output_dir=/x"]).model
    assert {key: cfg[key] for key in models.SPEC_KEYS if cfg[key] is not None} == SET_HERE.get(entry, {})


def test_a_value_in_the_config_wins_over_timms():
    cfg = compose_config(["model=vit_b32", "model.input_size=384", "model.fixed_size=false",
                          "model.mean=[0.1,0.2,0.3]", "output_dir=/x"]).model
    spec = models.model_spec(cfg)
    assert (spec["input_size"], spec["fixed_size"]) == (384, False)
    assert spec["mean"] == pytest.approx([0.1, 0.2, 0.3]) and spec["std"] == pytest.approx([0.5] * 3)


def test_an_architecture_timm_has_no_config_for_needs_every_value():
    cfg = compose_config(["model=digits_mixer", "model.mean=null", "output_dir=/x"]).model
    with pytest.raises(ConfigError, match="model.mean is not set and timm has no default for 'pii_mlp_mixer'"):
        models.model_spec(cfg)


def test_generic_timm_entry_reads_timms_config():
    cfg = compose_config(["model=timm", "model.name=vit_tiny_patch16_224", "model.weights=random", "output_dir=/x"]).model
    classifier = models.build(cfg, "cpu", **models.PLAIN)
    assert classifier.fixed_size and classifier.input_size == 224
    assert classifier(torch.rand(1, 3, 32, 32)).shape == (1, 1000)


def test_embedded_lite0_has_real_imagenet_weights():
    import skimage.data as skimage_data
    classifier = models.build(compose_config(["output_dir=/x"]).model, "cpu", **models.PLAIN)
    image = torch.from_numpy(skimage_data.coffee()).permute(2, 0, 1).float().div(255)[None]
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        probs = classifier(image).softmax(-1)
    assert probs.argmax().item() == 967 and probs[0, 967] > 0.5  # espresso


def test_local_weights_file_round_trip(tmp_path):
    cfg = compose_config(["model=timm", "model.name=resnet18", "model.weights=random", "output_dir=/x"]).model
    trained = models.build(cfg, "cpu", **models.PLAIN)
    path = tmp_path / "resnet18.pth"
    torch.save(trained.net.state_dict(), path)
    cfg.weights = str(path)
    loaded = models.build(cfg, "cpu", **models.PLAIN)
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(trained(x), loaded(x))
    import safetensors.torch as safetensors
    st_path = tmp_path / "resnet18.safetensors"
    safetensors.save_file(trained.net.state_dict(), st_path)
    cfg.weights = str(st_path)
    assert torch.allclose(trained(x), models.build(cfg, "cpu", **models.PLAIN)(x))


def test_unknown_timm_name_lists_how_to_fix():
    cfg = compose_config(["model=timm", "model.name=resnet_does_not_exist", "output_dir=/x"]).model
    with pytest.raises(ConfigError, match="unknown timm model model.name='resnet_does_not_exist'.*timm.list_models"):
        models.build(cfg, "cpu", **models.PLAIN)


def test_bf16_runs_the_backward_of_strided_depthwise_convs_in_fp32_on_cpu():
    # oneDNN's bf16 backward of a strided depthwise conv is several times slower than fp32 on the CPU
    # (pii.models.cpu.conv2d); its forward stays in bf16
    cfg = compose_config(["output_dir=/x"]).model  # Lite0, real weights
    fp32 = models.build(cfg, "cpu", precision="fp32", channels_last=True, compile=False, fold=False)
    bf16 = models.build(cfg, "cpu", precision="bf16", channels_last=True, compile=False, fold=False)
    strided = [m for m in bf16.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.stride[0] > 1]
    assert len(strided) == 4  # Lite0 drops resolution in four depthwise convs
    outputs = []
    handles = [m.register_forward_hook(lambda m, i, out: outputs.append(out)) for m in strided]
    image = torch.rand(2, 3, 112, 112)
    grads = []
    for classifier in (fp32, bf16):
        x = image.clone().requires_grad_(True)
        classifier(x)[:, 980].sum().backward()
        grads.append(x.grad)
    for handle in handles:
        handle.remove()
    assert [out.dtype for out in outputs] == [torch.bfloat16] * 4
    assert all(type(out.grad_fn).__name__ == "_BackwardInFp32Backward" for out in outputs)
    cosine = torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0)
    assert cosine > 0.9  # bf16 follows the fp32 image gradient


def test_a_plain_strided_depthwise_conv_gets_its_backward_in_fp32_under_bf16():
    from pii.models import cpu

    conv = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8).requires_grad_(False)
    net = torch.nn.Sequential(conv)
    cpu.strided_depthwise_backward_in_fp32(net)
    assert type(conv) is cpu.Conv2dBackwardInFp32
    x = torch.rand(2, 8, 16, 16).to(memory_format=torch.channels_last).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.dtype == torch.bfloat16
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    out.backward(upstream)
    reference = torch.nn.grad.conv2d_input(x.shape, conv.weight, upstream.float(), 2, 1, 1, 8)
    # computed in fp32, rounded to bf16 where it leaves the convolution: all of it as the fp32 reference
    # rounded (oneDNN's bf16 backward: 73% here)
    assert (x.grad == reference.to(torch.bfloat16).float()).float().mean() > 0.99


def test_the_cpus_network_gives_timms_outputs_and_gradients_without_copying_activations():
    # on the CPU (pii.models.device.adapt_network): TF "same" padding without a padded copy of the
    # input (pii.models.cpu.KernelPaddedConv2d), activations without autograd's copy of their input
    import copy

    import timm
    from timm.layers import Conv2dSame
    from torch.profiler import profile

    from pii.models import cpu

    # b0: SiLU; Lite0: ReLU6; both TF "same" padding with 3x3 and 5x5 kernels, strides 1 and 2
    for name in ("tf_efficientnet_b0", "tf_efficientnet_lite0"):
        timms = timm.create_model(name, num_classes=10).eval()
        ours = copy.deepcopy(timms)
        cpu.pad_in_kernel(ours)
        cpu.activations_without_copies(ours)
        cpu.mask_gradients_in_place(ours, 64)
        assert sum(type(m) is Conv2dSame for m in timms.modules()) == 5
        assert sum(type(m) is cpu.KernelPaddedConv2d for m in ours.modules()) == 5
        for size in (64, 63, 84):  # even sizes pad one more on the right, odd ones alike
            x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
            results = []
            for net in (timms, ours):
                image = x.clone().requires_grad_(True)
                with profile(record_shapes=True) as prof:
                    logits = net(image)
                    logits[:, 3].sum().backward()
                copied = [e.input_shapes[0] for e in prof.events() if e.name in ("aten::constant_pad_nd", "aten::clone")]
                results.append((logits.detach(), image.grad, [s for s in copied if s[0] == len(x) and s[1] > 3]))
            (logits_timm, grad_timm, copied_timm), (logits_ours, grad_ours, copied_ours) = results
            assert torch.allclose(logits_ours, logits_timm, atol=1e-5, rtol=1e-5), name
            # the same terms summed in another order: rounding, against the largest gradient (2e-7 to 6e-7 here)
            assert (grad_ours - grad_timm).abs().max() <= 1e-5 * grad_timm.abs().max(), name
            assert copied_ours == [] and copied_timm, name  # activations padded or copied: none (weights only)
    cfg = compose_config(["output_dir=/x"]).model
    lite0 = models.build(cfg, "cpu", **models.PLAIN)  # the CPU's classifier
    assert any(type(m) is cpu.KernelPaddedConv2d for m in lite0.modules())
    relu6 = [m for m in lite0.modules() if isinstance(m, torch.nn.Hardtanh)]
    assert len(relu6) == 33 and all(type(m) is cpu.HardtanhInPlace for m in relu6)
    # each masks its gradient in place but the last, which the pooling reads
    assert [m.grad_in_place for m in relu6] == [True] * 32 + [False]


def test_relu6_masks_its_gradient_in_place_only_where_a_convolution_alone_reads_it():
    from pii.models import cpu

    class Block(torch.nn.Module):  # a ReLU6 read by a convolution, another by an addition
        def __init__(self, relu6):
            super().__init__()
            self.conv1, self.conv2, self.conv3, self.conv4 = (torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(4))
            self.act1, self.act2 = relu6(), relu6()

        def forward(self, x):
            h = self.conv2(self.act1(self.conv1(x)))
            shortcut = self.conv3(h)  # made first, so its backward runs after act2's
            return shortcut + self.act2(self.conv4(h))

    torch.manual_seed(0)
    reference = Block(lambda: torch.nn.ReLU6()).requires_grad_(False)
    ours = Block(lambda: torch.nn.ReLU6(inplace=True)).requires_grad_(False)
    ours.load_state_dict(reference.state_dict())
    cpu.activations_without_copies(ours)
    cpu.mask_gradients_in_place(ours, 8)
    assert (ours.act1.grad_in_place, ours.act2.grad_in_place) == (True, False)

    def gradient(net):
        x = (torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 4).requires_grad_(True)
        net(x).square().sum().backward()
        return x.grad

    expected = gradient(reference)
    assert torch.allclose(gradient(ours), expected, rtol=1e-5, atol=1e-6)
    ours.act2.grad_in_place = True  # the addition's other input would get the masked gradient too
    assert not torch.allclose(gradient(ours), expected, rtol=1e-5, atol=1e-6)

    # the same arithmetic as writing a new tensor: Lite0's image gradient bit for bit
    lite0 = models.build(compose_config(["output_dir=/x"]).model, "cpu", **models.PLAIN)
    relu6 = [m for m in lite0.modules() if type(m) is cpu.HardtanhInPlace]
    at_64px = lambda x: lite0(torch.nn.functional.interpolate(x, size=64))  # noqa: E731
    grads = [gradient(at_64px)]
    for module in relu6:
        module.grad_in_place = False
    grads.append(gradient(at_64px))
    assert torch.equal(*grads)


def test_cudnn_autotuning_is_the_callers_choice(monkeypatch):
    # set without touching a GPU: an inversion's stages change size (autotuning at each costs more than
    # it saves), a feedforward training keeps one size
    from pii.models.device import configure

    for flag in ("benchmark", "allow_tf32"):  # restored after, as is the matmul precision
        monkeypatch.setattr(torch.backends.cudnn, flag, getattr(torch.backends.cudnn, flag))
    precision = torch.get_float32_matmul_precision()
    try:
        configure(torch.device("cuda"), cudnn_benchmark=True)
        assert torch.backends.cudnn.benchmark
        configure(torch.device("cuda"))
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.set_float32_matmul_precision(precision)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                    reason="keep_freed_memory tunes glibc's malloc (mallopt); this C library is not glibc")
def test_cpu_runs_keep_freed_memory():
    from pii.models import cpu
    from pii.models.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert cpu.keep_freed_memory()  # glibc (Linux): large blocks now come from the kept heap
    cpu.release_freed_memory()


def test_batchnorm_folds_into_convolutions_with_the_same_logits_and_image_gradients():
    cfg = compose_config(["output_dir=/x"]).model  # Lite0, real weights: BatchNorm with real statistics
    plain = models.build(cfg, "cpu", **models.PLAIN)
    folded = models.build(cfg, "cpu", precision="fp32", channels_last=False, compile=False, fold=True)
    count = lambda classifier: sum(isinstance(m, torch.nn.BatchNorm2d) for m in classifier.modules())  # noqa: E731
    assert (count(plain), count(folded)) == (49, 0)
    outputs = []
    for classifier in (plain, folded):
        x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        logits = classifier(x)
        logits[:, 980].sum().backward()
        outputs.append((logits.detach(), x.grad))
    (logits_plain, grad_plain), (logits_folded, grad_folded) = outputs
    assert torch.allclose(logits_folded, logits_plain, atol=1e-4, rtol=1e-4)
    assert torch.allclose(grad_folded, grad_plain, atol=1e-6, rtol=1e-3)
    assert not any(p.requires_grad for p in folded.parameters())  # still frozen


def test_batchnorm_that_does_not_follow_its_convolution_stays_unfolded():
    class NormFirst(torch.nn.Module):  # registered conv then bn, but bn runs first
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)
            self.bn.running_mean.fill_(0.5)
            self.bn.running_var.fill_(4.0)

        def forward(self, x):
            return self.conv(self.bn(x)).mean((2, 3))

    net = NormFirst().eval()
    assert models.fold_batchnorm(net, 16) is net
    assert isinstance(net.bn, torch.nn.BatchNorm2d)


def test_compile_auto_compiles_only_where_the_steps_saved_pay_for_compiling():
    from pii.models.device import wants_compile

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    paper = build.stages(compose_config(["experiment=paper", "output_dir=/x"]))  # Lite0: 7 sizes x 400 steps, 56-224 px
    # Lite0, 20 classes x 32 views: ~28 s saved for 7 sizes x 40 s of compiling
    assert not wants_compile("auto", cuda, paper, views=20 * 32)
    assert wants_compile("auto", cuda, paper, views=300 * 32)
    assert wants_compile("auto", cuda, paper, views=20 * 32, fixed_size=224)  # one size: one graph
    assert not wants_compile("auto", cpu, paper, views=300 * 32)
    assert wants_compile(True, cuda, paper) and not wants_compile(False, cuda, paper, views=100 * 32)
