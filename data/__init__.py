"""Datamodules, dataset readers for the real layouts, transforms, and the synthetic dataset."""
import os

# albumentations checks PyPI for a newer version on import; never from a training job.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
