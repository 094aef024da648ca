"""The judge: real Lite2 weights score a real photo; directories of inversions are found and judged."""

import json

import pytest
import skimage.data as skimage_data  # a dev dependency: pip install -e '.[dev]'
import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from pii.errors import ConfigError
from pii.eval.judge import JUDGE_JSON, build_judges, judge, judge_directory
from pii.run.compose import compose

ESPRESSO, TABBY = 967, 281


def photo(name: str, size: int = 224) -> torch.Tensor:
    img = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@pytest.fixture(scope="module")
def lite2():
    judges = build_judges(compose([]).verifier)  # the default verifier
    assert list(judges) == ["efficientnet_lite2"]
    return judges["efficientnet_lite2"]


def test_lite2_judges_coffee_as_espresso(lite2):
    assert lite2.input_size == 260
    result = judge(lite2, photo("coffee"), [ESPRESSO])  # 224 px in, resized to 260 inside
    entry = result.classes[0]
    assert entry.prediction == ESPRESSO and entry.top1 and entry.probability > 0.5
    assert result.top1 == 1.0 and result.top5 == 1.0


def test_wrong_target_is_a_miss(lite2):
    result = judge(lite2, photo("coffee"), [TABBY])
    assert result.top1 == 0.0 and result.top5 == 0.0 and result.classes[0].probability < 0.01


def test_judge_directory_recurses_and_writes_json(lite2, tmp_path):
    (tmp_path / "0_run" / "stages").mkdir(parents=True)
    (tmp_path / "1_run").mkdir()
    save_image(photo("coffee")[0], tmp_path / "0_run" / "967_espresso.png")
    save_image(photo("chelsea", 300)[0], tmp_path / "1_run" / "281_tabby.png")  # other sizes are resized too
    save_image(photo("coffee")[0], tmp_path / "0_run" / "stages" / "stage1_56px.png")  # not an inversion
    save_image(photo("coffee")[0], tmp_path / "0_run" / "grid.png")
    results = judge_directory(tmp_path, {"efficientnet_lite2": lite2})
    overall = results.overall["efficientnet_lite2"]
    assert overall.images == 2 and overall.top5 == 1.0
    assert set(results.runs) == {"0_run", "1_run"}
    written = json.loads((tmp_path / JUDGE_JSON).read_text())
    assert written["overall"]["efficientnet_lite2"]["images"] == 2
    assert written["runs"]["0_run"]["efficientnet_lite2"]["classes"][0]["image"] == "0_run/967_espresso.png"


def test_empty_directory_and_foreign_classes_are_config_errors(lite2, tmp_path):
    with pytest.raises(ConfigError, match="no inversions"):
        judge_directory(tmp_path, {"efficientnet_lite2": lite2})
    with pytest.raises(ConfigError, match="outside"):
        judge(lite2, photo("coffee"), [1000])


def test_verifier_choices_compose():
    assert not compose(["verifier=none"]).verifier
    both = compose(["verifier=[efficientnet_lite2,efficientnet_lite0]"]).verifier
    assert set(both) == {"efficientnet_lite2", "efficientnet_lite0"}
    custom = compose(["verifier=timm", "verifier.timm.name=resnet18", "verifier.timm.weights=random"]).verifier
    assert custom.timm.name == "resnet18" and custom.timm.input_size is None


def test_the_judge_measures_how_far_apart_the_images_of_one_class_are(lite2):
    from pii.eval.judge import features, resize

    torch.manual_seed(0)
    images = torch.rand(4, 3, 64, 64)
    apart = judge(lite2, images, [1, 1, 7, 7])
    feats = features(lite2, resize(images, lite2.input_size))
    expected = (torch.dist(feats[0], feats[1]) + torch.dist(feats[2], feats[3])) / 2
    assert apart.diversity == pytest.approx(float(expected), rel=1e-3)
    assert judge(lite2, images, [1, 2, 3, 4]).diversity is None
    same = judge(lite2, images[:1].repeat(2, 1, 1, 1), [1, 1])
    assert same.diversity == pytest.approx(0.0, abs=1e-3)
