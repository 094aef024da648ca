"""The digits claim's pipeline: models train, save, load through their configs, invert and get judged."""

import torch

from pii import models
from pii.run import build, digits


def test_digits_models_load_and_invert(tmp_path):
    (x_train, y_train), (x_test, _) = digits.digits_split()
    assert x_train.shape[1:] == (3, 32, 32) and 0 <= x_train.min() and x_train.max() <= 1
    x_small, y_small = x_train[:64], y_train[:64]
    trained = {}
    for short, name in {**digits.ARCHITECTURES, digits.JUDGE: "digits_judge"}.items():
        clf = digits.train(digits.model_config(name, "random"), x_small, y_small, epochs=1, seed=0)
        torch.save(clf.net.state_dict(), tmp_path / f"{short}.pt")
        trained[short] = clf
    for short, name in digits.ARCHITECTURES.items():  # the saved checkpoint loads through the model config
        loaded = models.build(digits.model_config(name, str(tmp_path / f"{short}.pt")), "cpu", **models.PLAIN)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x_test[:8]), trained[short](x_test[:8]))

    methods = {"pii": "digits/pii", "plain_ce": "digits/plain_ce"}
    results = digits.invert_all(tmp_path, ["schedule.stages=2", "schedule.steps=3"], methods=methods, robust="none")
    assert set(results) == set(digits.ARCHITECTURES)
    for short, by_method in results.items():
        for method, r in by_method.items():
            assert (tmp_path / "runs" / short / method / "3_class-3.png").is_file()
        # plain cross-entropy gradient ascent: the inverted model's own target probability rises
        assert by_method["plain_ce"]["model_probability"] > by_method["plain_ce"]["model_start_probability"]
    table = digits.format_table(results)
    assert table.splitlines()[0] == "| architecture | pii | plain_ce |" and len(table.splitlines()) == 5


def test_every_digits_method_composes_to_a_valid_32px_run(tmp_path):
    """The leaderboard's methods on digits (conf/experiment/digits/): each keeps its parametrization and gets
    the digits' budget."""
    from pii.run.config import check_invert

    assert list(digits.METHODS) == ["deepinversion_noise", "lucent", "maco", "pii", "pii_fourier",
                                    "pii_no_color_shift", "plain_ce"]
    assert set(digits.CLAIM_METHODS) <= set(digits.METHODS)
    for method, preset in digits.METHODS.items():
        cfg = digits.compose([f"experiment={preset}", "model=digits_cnn", "class_id=[0,1]", f"output_dir={tmp_path}"])
        check_invert(cfg)
        assert cfg.model.input_size == 32, method
        expected_param = {"pii_fourier": "fourier", "lucent": "fourier", "maco": "maco"}.get(method, "pixel")
        assert cfg.param.name == expected_param, method
        if method in ("maco", "lucent", "deepinversion_noise"):  # one full-size stage with plain_ce's 900 steps
            assert (cfg.schedule.stages, cfg.schedule.steps) == (1, 900), method
        elif method != "plain_ce":
            assert (cfg.schedule.stages, cfg.schedule.steps) == (3, 300), method
        pieces = [type(p).__name__ for p in build.augmentation(cfg)]
        if method.startswith("pii"):  # digits/pii's numbers for the method's transforms
            assert (build.augmentation(cfg).copies, build.augmentation(cfg)[0].max_shift) == (8, 4), method
            ensemble = "Crops" if method == "pii_fourier" else "Ensemble"
            assert pieces == ["Jitter", ensemble, "ColorShift"][:2 if method == "pii_no_color_shift" else 3], method
        if method == "plain_ce":  # no augmentation, the same 3 x 300 steps in one stage
            assert (pieces, build.augmentation(cfg).copies) == (["Ensemble"], 1)
            assert (cfg.schedule.zoom, cfg.schedule.centering) == (False, False)
            assert len(build.stages(cfg)) == 1 and build.stages(cfg)[0].steps == 900
