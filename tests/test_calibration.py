"""precision=auto (and channels_last, augmentation.chunk): chosen by timing on the machine that
runs, cached for the next run, and never over an explicit setting."""

import json

import pytest
import torch
from tiny import tiny_cfg

from pii import models
from pii.models import calibration
from pii.models.calibration import Candidate
from pii.models.layers import needs
from pii.run import build, runner


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PII_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def table(figures: dict[str, float]):
    """A timer that reads each candidate's seconds per view from `figures` (by Candidate.label; a
    probe not in it: its format's first figure), and keeps the labels it timed."""

    def seconds_per_view(candidate: Candidate) -> float:
        seconds_per_view.timed.append(candidate.label)
        if candidate.label not in figures and candidate.chunk == calibration.PROBE:
            prefix = candidate.label.rsplit("/", 1)[0] + "/"
            return next(v for k, v in figures.items() if k.startswith(prefix))
        return figures[candidate.label]

    seconds_per_view.timed = []
    return seconds_per_view


def never(candidate):
    raise AssertionError(f"timed {candidate.label}, but nothing was left to time")


BF16_FASTER = {"bf16/nhwc/4": 1.0, "bf16/nchw/4": 1.5, "fp32/nhwc/4": 2.0, "fp32/nchw/4": 3.0}
FP32_FASTER = {"bf16/nhwc/4": 2.0, "bf16/nchw/4": 3.0, "fp32/nhwc/4": 1.5, "fp32/nchw/4": 1.0}


def settle(cfg, seconds_per_view, views=4):
    return build.device_settings(cfg, torch.device("cpu"), build.stages(cfg), views, needs(cfg.objective), seconds_per_view)


@pytest.mark.parametrize("figures, expected", [(BF16_FASTER, ("bf16", True)), (FP32_FASTER, ("fp32", False))])
def test_auto_takes_the_candidate_that_timed_fastest(tmp_path, figures, expected):
    settings = settle(tiny_cfg(tmp_path), table(figures))
    assert (settings.precision, settings.channels_last) == expected
    assert settings.source == "measured" and settings.seconds_per_view == figures  # 4 views: no probe
    assert settings.size == 32  # tiny_cfg's stages end at 32 px, where most of the pixels are
    assert "precision=" + expected[0] in settings.line()


def test_the_second_run_reads_the_cache_and_times_nothing(tmp_path, cache_dir, monkeypatch):
    first = settle(tiny_cfg(tmp_path), table(FP32_FASTER))
    second = settle(tiny_cfg(tmp_path), never)
    assert first.source == "measured" and second.source == "cache" and second.calibration_seconds == 0
    assert (second.precision, second.channels_last) == (first.precision, first.channels_last) == ("fp32", False)
    (key,) = json.loads((cache_dir / calibration.CACHE_FILE).read_text())
    assert "test_efficientnet" in key and torch.__version__ in key and "32 px" in key
    assert key.endswith(f"pii code {calibration.code_version()}")
    # another instruction set is another machine: timed again
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    timer = table(BF16_FASTER)
    assert settle(tiny_cfg(tmp_path), timer).precision == "bf16" and timer.timed


def test_timings_cached_by_other_code_are_not_reused(tmp_path, monkeypatch):
    # a pii whose network changed since the cache was written (one format got faster) times again,
    # rather than choose from the older code's figures or mix them with its own
    assert settle(tiny_cfg(tmp_path), table(FP32_FASTER)).precision == "fp32"
    monkeypatch.setattr(calibration, "code_version", lambda: "another")
    timer = table(BF16_FASTER)
    second = settle(tiny_cfg(tmp_path), timer)
    assert second.source == "measured" and (second.precision, second.channels_last) == ("bf16", True)
    assert set(timer.timed) == set(BF16_FASTER)  # every candidate timed anew


def test_an_explicit_setting_wins_over_the_timings(tmp_path):
    timer = table({**BF16_FASTER, "fp32/nhwc/4": 1.2})
    settings = settle(tiny_cfg(tmp_path, "precision=fp32"), timer)
    assert settings.precision == "fp32" and settings.channels_last  # auto still picks the memory format
    assert set(settings.seconds_per_view) == {"fp32/nhwc/4", "fp32/nchw/4"}
    fixed = settle(tiny_cfg(tmp_path, "precision=fp32", "channels_last=false", "augmentation.chunk=3"), never)
    assert (fixed.precision, fixed.channels_last, fixed.chunk, fixed.source) == ("fp32", False, 3, "config")


def test_a_candidate_far_slower_in_its_probe_is_not_timed_further():
    # bf16 without AVX512-BF16 kernels (ONEDNN_MAX_CPU_ISA=AVX2): 28x slower than fp32 per view
    figures = {"bf16/nhwc/16": 40.0, "bf16/nchw/16": 20.0, "fp32/nhwc/16": 1.0, "fp32/nchw/16": 1.4}
    timer = table(figures)
    best, medians = calibration.calibrate(["bf16", "fp32"], [True, False], [16], timer)
    assert best == Candidate("fp32", True, 16)
    assert timer.timed.count("bf16/nhwc/4") == 1 and "bf16/nhwc/16" not in timer.timed
    assert medians["bf16/nchw/4"] == 20.0 and "bf16/nchw/16" not in medians
    assert timer.timed.count("fp32/nhwc/16") == 1 + calibration.ROUNDS  # one untimed call, then the rounds


def test_views_are_split_into_the_fastest_chunk_only_where_a_smaller_one_won():
    # per view: 64 views at once lose to cache misses, 16 at a time win; bf16/nhwc is the fastest format at 64
    figures = {"bf16/nhwc/64": 1.4, "bf16/nchw/64": 2, "fp32/nhwc/64": 2, "fp32/nchw/64": 2,
               "bf16/nhwc/8": 1.3, "bf16/nhwc/16": 1.0, "bf16/nhwc/32": 1.1}
    best, _ = calibration.calibrate(["bf16", "fp32"], [True, False], calibration.chunk_candidates(64), table(figures))
    assert best == Candidate("bf16", True, 16)
    assert calibration.even_chunk(40, 16) == 14  # 3 equal chunks, not 16 + 16 + 8
    # the largest chunk timed wins: no split, however many views
    figures.update({"bf16/nhwc/64": 0.9})
    best, _ = calibration.calibrate(["bf16"], [True], calibration.chunk_candidates(320), table(figures))
    assert best.chunk == 64 == calibration.CHUNKS[-1]
    # a smaller chunk faster by less than SPLIT_GAIN: within the timing's noise, no split
    figures.update({"bf16/nhwc/64": 1.05})
    best, _ = calibration.calibrate(["bf16"], [True], calibration.chunk_candidates(64), table(figures))
    assert figures["bf16/nhwc/16"] * calibration.SPLIT_GAIN > figures["bf16/nhwc/64"] and best.chunk == 64


def test_cuda_keeps_its_policy_without_timing(tmp_path):
    cfg = tiny_cfg(tmp_path)
    settings = build.device_settings(cfg, torch.device("cuda"), [], 64, needs(cfg.objective), never)
    assert (settings.precision, settings.channels_last, settings.chunk, settings.source) == ("bf16", True, "auto",
                                                                                            "policy")


def test_a_run_records_its_choice_in_metrics_json_and_the_next_run_uses_the_cache(tmp_path):
    # the real timer, on the tiny model
    first = runner.run(tiny_cfg(tmp_path / "a", "verifier=none"))
    second = runner.run(tiny_cfg(tmp_path / "b", "verifier=none"))
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())["device_settings"]
    assert saved["source"] == "measured" and saved["precision"] in ("bf16", "fp32")
    assert len(saved["seconds_per_view"]) >= 4 and all(s > 0 for s in saved["seconds_per_view"].values())
    assert first.device_settings == saved
    assert second.device_settings["source"] == "cache"
    assert second.device_settings["precision"] == saved["precision"]
    explicit = runner.run(tiny_cfg(tmp_path / "c", "verifier=none", "precision=fp32", "channels_last=true"))
    assert explicit.device_settings["precision"] == "fp32" and explicit.config["precision"] == "fp32"


@pytest.mark.parametrize("damaged", [-5.0, 0, float("nan"), "fast", None, True])
def test_a_cached_timing_that_is_not_a_time_is_timed_afresh(tmp_path, cache_dir, caplog, damaged):
    """A cache entry is a file like any other: a negative, zero, nan or string figure for the fastest-looking
    candidate is not used to choose (a negative one made runs take the slowest setting); it is timed again,
    the run says so in one line, and the cache gets the real figure."""
    settle(tiny_cfg(tmp_path), table(FP32_FASTER))
    path = cache_dir / calibration.CACHE_FILE
    cache = json.loads(path.read_text())
    (key,) = cache
    cache[key]["seconds_per_view"]["bf16/nchw/4"] = damaged  # the slowest, made to look fastest
    path.write_text(json.dumps(cache))
    timer = table(FP32_FASTER)
    with caplog.at_level("WARNING", logger="pii.models.calibration"):
        again = settle(tiny_cfg(tmp_path), timer)
    assert (again.precision, again.channels_last) == ("fp32", False) and timer.timed == ["bf16/nchw/4"] * 4
    (line,) = [r.getMessage() for r in caplog.records if "calibration cache" in r.getMessage()]
    assert "bf16/nchw/4=" in line and "timing them afresh" in line
    assert json.loads(path.read_text())[key]["seconds_per_view"] == FP32_FASTER
