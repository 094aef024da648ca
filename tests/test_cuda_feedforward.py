"""Feedforward training on a GPU: bf16 (and compiled) steps, and steps that never wait for the device.
Skipped without CUDA. Offline: logger=none and the tiny digits classifier trained on the fly."""

import json
import math
import warnings

import pytest
import torch

from pii.feedforward import losses
from pii.feedforward.runner import train_invert
from pii.feedforward.train import Dist, train
from tests.test_feedforward_train import fresh, parts, tiny  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

DEVICE = "cuda"
GPU = ("device=" + DEVICE, "schedule.precision=bf16", "logger=none")


def run(cfg, out_dir):
    """Train a fresh tiny G on the device; returns G's weights before, G after, and the history."""
    device = torch.device(DEVICE)
    data, clf = parts(cfg, device)
    G, D = fresh(cfg, data, clf)
    before = [p.detach().clone() for p in G.parameters()]
    _, history = train(G, D, clf, data.train, losses.build(cfg.loss, clf), cfg.schedule, out_dir,
                       dist_info=Dist(device=device))
    return before, G, history


@pytest.mark.parametrize("compiled", [False, True])
def test_two_bf16_steps_change_g_and_give_finite_losses(tmp_path, tiny, compiled):
    cfg = tiny(*GPU, "schedule.steps=2", "loss.pixel_l1=1", f"schedule.compile={str(compiled).lower()}")
    before, G, history = run(cfg, tmp_path / "run")
    assert [h["step"] for h in history] == [0, 1]
    assert all(math.isfinite(v) for h in history for v in h.values()), history
    assert all(p.device.type == DEVICE for p in G.parameters())
    assert any(not torch.equal(a.to(b.device), b) for a, b in zip(before, G.parameters()))


def test_steps_between_log_points_never_wait_for_the_gpu(tmp_path, tiny):
    """As many synchronising calls for 2 steps as for 6: none of them is per step."""

    def syncs(steps: int) -> list[str]:
        every = [f"schedule.{k}={steps}" for k in ("steps", "log_every", "checkpoint_every", "sample_every")]
        cfg = tiny(*GPU, *every)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run(cfg, tmp_path / str(steps))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]

    short, long = syncs(2), syncs(6)
    assert len(short) == len(long), (short, long)


def test_train_invert_end_to_end_with_workers_and_pinned_memory(tmp_path, tiny):
    metrics = train_invert(tiny(*GPU, "schedule.steps=2", "schedule.workers=2", "conditions=[logits]",
                                "analyses=[reconstructions]"))
    assert all(math.isfinite(v) for v in metrics["final_losses"]["logits"].values())
    assert json.loads((tmp_path / "run" / "eval.json").read_text()).keys() == {"logits"}
