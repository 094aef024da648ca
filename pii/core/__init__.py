"""The inversion algorithm: image parametrizations, augmentations, the zoom and centering schedule,
losses, and the one loop that joins them (pii.core.inversion.invert). It imports torch and nothing
else of pii's but the error type, so a notebook can use it alone."""
