"""A second digits judge that reads either stroke polarity (bright-on-dark and dark-on-light).

    python scripts/train_polarity_judge.py                       # -> outputs/digits/judge_polarity.pt
    python scripts/judge.py outputs/digits/runs verifier=digits_judge \
        verifier.digits_judge.weights=outputs/digits/judge_polarity.pt

PII draws many digits dark-on-light, which the default judge (trained on bright-on-dark digits)
reads poorly. This one is the same ResNet-18 (conf/model/digits_judge.yaml) with another seed,
half its training digits inverted; it prints its held-out accuracy on both polarities.
"""

import logging
from pathlib import Path

import torch

from pii.models import digits
from pii.models.training import accuracy
from pii.run.cli import ScriptParser, script_main
from pii.run.digits import model_config


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/digits/judge_polarity.pt"))
    parser.add_argument("--epochs", type=int, default=10)
    return parser


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    (xt, yt), (xs, ys) = digits.digits_split()
    clf = digits.train(model_config("digits_judge", "random"), xt, yt, args.epochs, seed=2000, shift=3, colour=0.5,
                       polarity=0.5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(clf.net.state_dict(), args.out)
    print(f"held-out accuracy {accuracy(clf, xs, ys):.3f}, "
          f"polarity inverted {accuracy(clf, 1 - xs, ys):.3f}; saved {args.out}")


if __name__ == "__main__":
    script_main(main)
