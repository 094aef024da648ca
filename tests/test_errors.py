"""Bad input gets one clear line and a non-zero exit, never a traceback."""

import pytest
import torch
from conftest import Payload, compose_config, run_cli

from pii.errors import ConfigError
from pii.run.runner import run


@pytest.mark.parametrize("override,message", [
    ("class_id=abc", "class_id must be an integer"),
    ("class_id=2.5", "class_id must be an integer"),
    ("class_id=[980,x]", "class_id must be an integer"),
    ("class_id=1000", "class_id 1000 is outside this model's classes 0..999"),
    ("class_id=-1", "outside this model's classes"),
    ("augmentation.ensemble.size=0", "augmentation.ensemble.size must be a whole number >= 1"),
    ("schedule.steps=-5", "schedule.steps must be >= 1"),
    ("model.weights=/no/such/file.pth", "does not exist; pass the path of a .pth"),
    ("device=cuda:7" if not torch.cuda.is_available() else "device=nonsense", "device"),
])
def test_bad_input_is_a_config_error(override, message, tmp_path):
    cfg = compose_config([override, f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not list(tmp_path.iterdir())  # nothing written before the input was checked


def test_weights_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "notes.pth"
    bogus.write_text("not weights")
    with pytest.raises(ConfigError, match="model.weights .* is damaged or not a checkpoint"):
        run(compose_config([f"model.weights={bogus}", f"output_dir={tmp_path / 'out'}"]))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": Payload()}, evil)
    with pytest.raises(ConfigError, match="refusing to load .* could run code"):
        run(compose_config([f"model.weights={evil}", f"output_dir={tmp_path / 'out'}"]))
    assert "this ran at load time" not in capsys.readouterr().out


def test_offline_pretrained_download_says_how_to_use_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    with pytest.raises(ConfigError, match="could not fetch pretrained weights .* model.weights=/path"):
        run(compose_config(["model=deit", f"output_dir={tmp_path / 'out'}"]))


def test_cli_prints_one_line_and_exits_2(tmp_path):
    result = run_cli("invert.py", "class_id=5000", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: class_id 5000 is outside this model's classes 0..999"
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_unknown_model_lists_the_available_ones(tmp_path):
    result = run_cli("invert.py", "model=no_such_model", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Could not find 'model/no_such_model'" in result.stderr
    assert "efficientnet_lite0" in result.stderr and "vit_b32" in result.stderr
