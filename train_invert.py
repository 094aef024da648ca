"""Feedforward inversion: `python train_invert.py` trains a generator that turns
a classifier's logits back into images (and a one-hot baseline). See README.md."""

from pii.feedforward.cli import train_invert_main

if __name__ == "__main__":
    train_invert_main()
