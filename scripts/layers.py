"""List a model's layers by name, with their output shapes and layouts: the names an objective's
`objective.layer` takes (a unit objective: docs/objectives.md).

    python scripts/layers.py model=vit_b32 model.weights=random
    python scripts/layers.py model=efficientnet_lite0 blocks          # only names containing 'blocks'

Takes invert.py's overrides; a word without '=' filters the names. Each line: the name, the output
shape at the model's input size (batch left out), the layout (nchw, nhwc, tokens, flat), the
number of units and the grid of positions a unit has (prefix tokens left out).
"""

import argparse

from pii import models
from pii.models.layers import probe
from pii.run.cli import ScriptParser, script_main
from pii.run.compose import compose


def parser() -> ScriptParser:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", help="Hydra overrides, as for invert.py (model=...), and words that "
                        "filter the names")
    return parser


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv).args
    words = [a for a in args if "=" not in a]
    cfg = compose([a for a in args if "=" in a])
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    layers, order = probe(classifier)
    print(f"{classifier.name}: {len(order)} layers at {classifier.input_size} px, in the order they finish")
    for name in order:
        if name in layers and all(word in name for word in words):
            print(layers[name].describe())


if __name__ == "__main__":
    script_main(main)
