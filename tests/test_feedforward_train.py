"""Feedforward inversion end to end, tiny: training, checkpoints and resume, DDP, bad inputs."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import run_cli
from omegaconf import OmegaConf

from pii.errors import ConfigError
from pii.feedforward import classifier as classifier_lib
from pii.feedforward import data as data_lib
from pii.feedforward import losses
from pii.feedforward.runner import discriminator, generator, train_invert
from pii.feedforward.train import CHECKPOINT, load_checkpoint, train
from pii.feedforward.config import compose_train_invert as compose


@pytest.fixture
def tiny(tmp_path):
    """The real config, shrunk: 8 px, narrow nets, a 1-epoch classifier (trained once per test run
    into the tests' classifier cache, conftest), a few steps."""

    def make(*overrides: str):
        small_cnn = [] if "classifier=model" in overrides else ["classifier.width=8", "classifier.epochs=1"]
        return compose(base(tmp_path) + small_cnn + list(overrides))

    return make


def base(tmp_path: Path) -> list[str]:
    return [
        "generator.resolution=8", "generator.width=8", "generator.z_dim=32", "generator.embed_dim=16",
        "discriminator.width=8", "schedule.steps=4", "schedule.batch_size=16",
        "schedule.checkpoint_every=2", "schedule.sample_every=2", "schedule.log_every=1", "fit_images=256",
        "grid_images=4", "device=cpu", f"output_dir={tmp_path}/run"]


def parts(cfg, device=torch.device("cpu")):
    data = data_lib.build(cfg.data, cfg.generator.resolution)
    clf = classifier_lib.build(cfg.classifier, None, data, cfg.generator.resolution, device)
    return data, clf


def fresh(cfg, data, clf, seed=0):
    torch.manual_seed(seed)
    G = generator(cfg)(num_classes=data.num_classes, condition="logits", temperature=float(cfg.temperature))
    x, _ = data_lib.load_all(data.train)
    G.condition.fit(clf(x[:256].to(clf.mean.device)).cpu())
    return G, discriminator(cfg)(cond_dim=data.num_classes, resolution=cfg.generator.resolution)


def test_training_lowers_the_loss_and_resumes_to_the_same_sequence(tmp_path, tiny):
    # a strong reconstruction term, so that 16 steps show a clear drop through the GAN noise
    # ema_start=3: the resumed run (from step 2) must still copy G at step 2 and average from step 3
    cfg = tiny("schedule.lr_g=0.01", "schedule.lr_d=0.0005", "loss.pixel_l1=10", "loss.adversarial=0.1",
               "schedule.ema_start=3", "schedule.ema_decay=0.5")
    data, clf = parts(cfg)
    recon = losses.build(cfg.loss, clf)

    steps = OmegaConf.merge(cfg.schedule, {"steps": 16, "checkpoint_every": 16})
    G, D = fresh(cfg, data, clf)
    _, history = train(G, D, clf, data.train, recon, steps, tmp_path / "long")
    l1 = [h["pixel_l1"] for h in history]
    assert sum(l1[-4:]) / 4 < 0.8 * sum(l1[:4]) / 4, l1

    # clean 4 steps vs 2 steps + resume to 4: the same losses, and the checkpoint says step 4
    G, D = fresh(cfg, data, clf)
    clean_ema, clean = train(G, D, clf, data.train, recon, cfg.schedule, tmp_path / "clean")
    G, D = fresh(cfg, data, clf)
    train(G, D, clf, data.train, recon, OmegaConf.merge(cfg.schedule, {"steps": 2}), tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["step"] == 2
    G, D = fresh(cfg, data, clf, seed=123)  # other weights: the checkpoint must overwrite them
    resumed_ema, resumed = train(G, D, clf, data.train, recon, cfg.schedule, tmp_path / "resumed", resume=True)
    assert [h["step"] for h in resumed] == [2, 3]
    for a, b in zip(clean[2:], resumed):
        assert a["g_loss"] == pytest.approx(b["g_loss"], rel=1e-4, abs=1e-5)
        assert a["d_loss"] == pytest.approx(b["d_loss"], rel=1e-4, abs=1e-5)
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["step"] == 4
    resumed_state = resumed_ema.state_dict()  # the EMA generator too: timm's ModelEmaV3 saved and restored
    for key, value in clean_ema.state_dict().items():
        assert torch.allclose(value.float(), resumed_state[key].float(), rtol=1e-4, atol=1e-6), key
    saved = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["G_ema"]
    assert all(torch.equal(saved[k], v) for k, v in resumed_state.items())


def test_ema_copies_g_before_ema_start_then_averages_parameters_and_copies_buffers():
    from timm.utils import ModelEmaV3

    from pii.feedforward.train import ema_update

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = ModelEmaV3(model, decay=0.9, exclude_buffers=True)

    def change():
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(8, 3))  # train mode: new running statistics

    change()
    ema_update(ema, model, step=0, start=1)  # before ema_start: a copy
    assert all(torch.equal(a, b) for a, b in zip(ema.module.state_dict().values(), model.state_dict().values()))
    before = [p.clone() for p in ema.module.parameters()]
    change()
    ema_update(ema, model, step=1, start=1)
    for old, new, current in zip(before, ema.module.parameters(), model.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * current)
    assert all(torch.equal(a, b) for a, b in zip(ema.module.buffers(), model.buffers()))


def test_the_g_step_computes_no_gradients_for_d_and_bf16_trains(tmp_path, tiny):
    cfg = tiny("schedule.steps=2", "schedule.log_every=2", "schedule.precision=bf16")
    data, clf = parts(cfg)
    G, D = fresh(cfg, data, clf)
    grads = []  # one entry per gradient accumulated into a D weight
    for p in D.parameters():
        p.register_post_accumulate_grad_hook(lambda p: grads.append(p))
    _, history = train(G, D, clf, data.train, losses.build(cfg.loss, clf), cfg.schedule, tmp_path / "run")
    assert len(grads) == 2 * len(list(D.parameters()))  # the D steps' only: D is frozen in the G steps
    assert all(p.requires_grad for p in D.parameters())  # and trainable again after them
    assert [h["step"] for h in history] == [0, 1]  # fetched at step 2 (log_every), one record per step
    assert all(torch.isfinite(torch.tensor(v)) for h in history for v in h.values())


def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"step": 1, "obj": Path("x")}, path)  # any non-tensor class
    with pytest.raises(ConfigError, match="refusing to load"):
        load_checkpoint(path)


def test_a_diverging_gan_stops_at_the_first_nonfinite_loss_before_saving_it(tmp_path, tiny):
    """D's weights turned to nan: the first step's losses are not finite. The run stops naming the
    losses and the step before the step-2 checkpoint is written (the losses are read back then,
    though log_every is 4)."""
    cfg = tiny("schedule.log_every=4")
    data, clf = parts(cfg)
    G, D = fresh(cfg, data, clf)
    with torch.no_grad():
        next(D.parameters()).fill_(float("nan"))
    with pytest.raises(ConfigError, match=r"^logits: d_loss.* became nan or inf at step 1 of 4: the training diverged; "
                                          r"lower schedule.lr_g and schedule.lr_d \(the checkpoint keeps step 0\)$"):
        train(G, D, clf, data.train, losses.build(cfg.loss, clf), cfg.schedule, tmp_path / "run", tag="logits")
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_train_invert_writes_eval_json_for_both_models(tmp_path, tiny):
    cfg = tiny("analyses=[reconstructions,edits]", "logger=wandb", "logger.mode=offline")
    metrics = train_invert(cfg)
    out = tmp_path / "run"
    ev = json.loads((out / "eval.json").read_text())
    assert set(ev) == {"logits", "onehot"}
    for entry in ev.values():
        assert set(entry) == {"agreement", "retrieval_features", "retrieval_pixels", "psnr", "ssim", "chance"}
        assert 0 < entry["chance"] < 1
    assert metrics["eval"] == ev
    assert (out / "reconstructions.png").exists() and (out / "logits_edits.png").exists()
    assert load_checkpoint(out / "logits" / CHECKPOINT)["step"] == 4
    assert sorted(p.name for p in (out / "onehot" / "samples").iterdir()) == ["step000002.png", "step000004.png"]
    # imported here: the GPU check imports this module's fixtures on a machine without wandb
    from wandb_file import history, run_file, run_record

    runs = {}  # one offline W&B run per condition, in one group, with the same keys
    for condition in ("logits", "onehot"):
        path = run_file(out / condition)
        runs[condition] = (run_record(path), [r for r in history(path) if "d_loss" in r])
    (logits_run, logits_rows), (onehot_run, onehot_rows) = runs["logits"], runs["onehot"]
    assert logits_run.run_group == onehot_run.run_group == "run"
    assert (logits_run.display_name, onehot_run.display_name) == ("run/logits", "run/onehot")
    for rows in (logits_rows, onehot_rows):  # every logged step kept (log_every=1, 4 steps)
        assert [r["_step"] for r in rows] == [1, 2, 3, 4]
    assert set(logits_rows[0]) == set(onehot_rows[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import pii.feedforward.runner as runner_lib

    def train_and_keep(G, *args, **kwargs):  # each rank's trained G, to compare across ranks
        G_ema, history = train(G, *args, **kwargs)
        params = {name: p.detach() for name, p in G.named_parameters()}  # BN statistics stay per rank
        torch.save(params, Path(cfg_dict["output_dir"]) / f"G_rank{rank}.pt")
        return G_ema, history

    runner_lib.train = train_and_keep
    train_invert(OmegaConf.create(cfg_dict))


def test_ddp_with_two_gloo_processes(tmp_path, tiny):
    cfg = tiny("conditions=[logits]", "analyses=[]")
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg_dict), nprocs=2, join=True)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert set(metrics["eval"]) == {"logits"}
    assert load_checkpoint(tmp_path / "run" / "logits" / CHECKPOINT)["step"] == 4
    # each rank trained on its own slice of every batch and its own noise: only DDP's gradient
    # all-reduce keeps their generators identical
    g0, g1 = (torch.load(tmp_path / "run" / f"G_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert g0.keys() == g1.keys()
    for key in g0:
        torch.testing.assert_close(g0[key], g1[key], msg=key)
    start = dict(generator(cfg)(num_classes=10, condition="logits", temperature=float(cfg.temperature))
                 .named_parameters())
    assert any(g0[k].shape == start[k].shape and not torch.equal(g0[k], start[k].detach()) for k in g0)  # it trained


@pytest.mark.parametrize("override,message", [
    ("data=folder data.root=/no/such/folder", "data folder '/no/such/folder' does not exist"),
    ("data=folder", r"data.root has no value \(pii.feedforward.data.folder needs it\); pass data.root=<value>"),
    ("classifier.num_classes=7", "the classifier has 7 classes but the data has 10"),
    ("classifier=model model=resnet50", "the classifier has 1000 classes but the data has 10"),
    ("generator.resolution=48", "resolution=48 cannot be made"),
    ("classifier._target_=pii.feedforward.classifier.no_such", "classifier._target_=.* cannot be loaded"),
    ("data.test_fraction=0.0001", "data.test_fraction=0.0001 leaves no train or no test images out of 1797"),
])
def test_bad_inputs_are_config_errors(tiny, override, message):
    with pytest.raises(ConfigError, match=message):
        train_invert(tiny(*override.split()))


def test_cli_prints_one_line_and_exits_2(tmp_path):
    proc = run_cli("train_invert.py", "generator.resolution=48", f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: generator.resolution=48 cannot be made from a 4x4 base by doubling; use base*2^k, e.g. 32, 64, 128"]


def test_image_folder_with_a_model_group_classifier(tmp_path, tiny):
    """data=folder + classifier=model: any timm model (random weights here) as the inverted classifier."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for cls in ("cat", "dog"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(6):
            pixels = (torch.rand(12, 12, 3, generator=gen) * 255).byte().numpy()
            Image.fromarray(pixels).save(tmp_path / "images" / cls / f"{i}.png")
    cfg = tiny("data=folder", f"data.root={tmp_path / 'images'}", "data.test_fraction=0.34",
               "classifier=model", "model=timm", "model.name=resnet10t", "model.num_classes=2",
               "model.weights=random", "model.input_size=8", "model.fixed_size=false",
               "model.mean=[0.5,0.5,0.5]", "model.std=[0.5,0.5,0.5]", "schedule.batch_size=4",
               "schedule.steps=2", "conditions=[logits]", "analyses=[reconstructions]")
    metrics = train_invert(cfg)
    assert metrics["classifier"] == "resnet10t" and metrics["num_test"] == 4
    assert set(metrics["eval"]["logits"]) >= {"retrieval_features", "chance"}


def test_resume_may_change_how_a_run_goes_not_what_it_trains(tmp_path, tiny):
    """resume=true reads the run's .hydra/config.yaml: more steps, another device or logger continue;
    a changed seed, learning rate or loss weight is refused naming it (metrics.json would claim it
    for the steps trained without it)."""
    from pii.feedforward.runner import check_unchanged

    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)
    saved = OmegaConf.to_container(tiny(), resolve=False)
    saved.pop("hydra", None)
    OmegaConf.save(OmegaConf.create(saved), out / ".hydra" / "config.yaml")
    check_unchanged(tiny("resume=true", "schedule.steps=40", "device=cpu", "logger=wandb", "num_threads=2"), out)
    for changed in ("seed=7", "schedule.lr_g=0.003", "loss.pixel_l1=0.5", "generator.base=16", "conditions=[logits]"):
        with pytest.raises(ConfigError, match=f"resume=true: {changed.split('=')[0]}=.* would change what its checkpoints mean"):
            check_unchanged(tiny("resume=true", changed), out)
