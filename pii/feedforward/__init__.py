"""Feedforward inversion (Teterwak et al., "Understanding invariance via feedforward inversion of
discriminatively trained classifiers", ICML 2021): a generator G trained once so that
G(logits of a classifier on x, noise) looks like x.

One concept per module: `config` (train_invert's schemas, checks and composing),
`generator` (BigGAN-style G with logit-conditioned batch norm), `discriminator`
(projection D), `losses` (hinge + optional reconstruction terms), `data` (datasets
and batches), `classifier` (the classifier whose logits are inverted), `train` (the
loop, checkpoints, EMA, DDP), `evaluate` (held-out metrics), `analyses` (image
grids), `runner` (`train_invert(cfg) -> metrics`). Tracking (none | W&B) is invert.py's, pii.run.tracking.
"""
