"""The random numbers of an inversion, one stream per image.

Each image of a batch draws from its own generator, seeded from (seed, class id, stage index), so
its starting noise and augmentations do not depend on which other classes share its batch: a class
list split into several jobs gives each class what one run over the whole list gives it. Seeding
afresh at each stage's start lets a run resumed at a stage boundary draw what the uninterrupted run
draws, with no generator state to save.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def stream_seed(seed: int, class_id: int, stage: int, copy: int = 0) -> int:
    """A 64-bit seed for the stream of (seed, class_id, stage), all >= 0: numpy's SeedSequence mixes
    them, so nearby triples give unrelated streams. `copy` k > 0: the k-th other image of the same
    target in a batch (the objective's diversity compares them), a stream of its own."""
    entropy = [int(seed), int(class_id), int(stage)] + ([int(copy)] if copy else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


class Draws:
    """One torch.Generator per image. A draw of `per_image` rows gives (batch * per_image, *shape):
    image i's own rows i * per_image .. (i + 1) * per_image - 1, the order of the ensemble's copies.

    The generators are on the CPU: the numbers are made there and copied to the device once per
    draw, and are the same on every device. Per-pixel noise, too many numbers to copy at each step,
    is made on the device from generators there that `on` seeds from these streams.
    """

    def __init__(self, generators: list[torch.Generator]):
        self.generators = generators

    @classmethod
    def seeded(cls, seed: int, class_ids: Sequence[int], stage: int) -> Draws:
        """A stream per image; a target repeated in `class_ids` gets a new stream at each repeat."""
        copies = [list(class_ids[:i]).count(c) for i, c in enumerate(class_ids)]
        return cls([torch.Generator().manual_seed(stream_seed(seed, c, stage, k)) for c, k in zip(class_ids, copies)])

    def __len__(self) -> int:
        return len(self.generators)

    def rand(self, per_image: int, *shape: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """U[0, 1) floats."""
        return self._each(lambda g: torch.rand(per_image, *shape, generator=g, device=g.device), device)

    def randn(self, per_image: int, *shape: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """N(0, 1) floats."""
        return self._each(lambda g: torch.randn(per_image, *shape, generator=g, device=g.device), device)

    def randint(self, low: int, high: int, per_image: int, *shape: int) -> torch.Tensor:
        """Integers in [low, high), on the generators' device."""
        return self._each(lambda g: torch.randint(low, high, (per_image, *shape), generator=g, device=g.device),
                          self.generators[0].device)

    def on(self, device: torch.device | str) -> Draws:
        """Generators on `device`, each seeded by the next number of its image's stream here."""
        return Draws([torch.Generator(device).manual_seed(s) for s in self.randint(0, 2**62, 1).tolist()])

    def _each(self, draw: Callable[[torch.Generator], torch.Tensor], device) -> torch.Tensor:
        return torch.cat([draw(g) for g in self.generators]).to(device)
