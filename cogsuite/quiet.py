"""Third-party messages a user of the suite can do nothing about, kept off the first screen.

Each filter matches one specific message, so every other warning still shows:

- Lightning's "Tip: ... try installing litlogger" advertisement (an info line on every Trainer);
- the ``LeafSpec`` deprecation that newer torch raises inside Lightning's own ``_pytree`` helper
  (Lightning's code, not ours or the user's; goes away with a Lightning release);
- "You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a
  `LightningDataModule`": the suite's tasks move batches to the device and normalise there on
  purpose (``tasks.base``), so this is the design, not a mistake to fix.

Lightning's model summary without its FLOPs column is ``cogsuite.model_summary``.
"""
from __future__ import annotations

import logging
import warnings

_IGNORED_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a `LightningDataModule`",
)
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropAdvertisement(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def quiet_third_party_noise() -> None:
    """Install the filters above; calling it again adds nothing."""
    for message in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)  # replaces an identical earlier entry
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdvertisement) for f in logger.filters):
            logger.addFilter(_DropAdvertisement())
