"""The arithmetic a classifier (or train_invert's G and D) runs in: float32, or bfloat16 autocast.
Every place that names a precision (the schemas and their checks, the classifier, the CPU
calibration, train_invert's loop) reads these, so a new one is added here. No torch: the config
checks read it before torch is imported."""

PRECISIONS = ("fp32", "bf16")
AUTO = "auto"  # invert.py's `precision=auto`: chosen per device (pii.models.calibration)
