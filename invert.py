"""Plug-In Inversion: `python invert.py model=vit_b32 class_id=980`. See README.md."""

from pii.run.cli import invert_main

if __name__ == "__main__":
    invert_main()
