"""Lightning's model summary without its FLOPs column.

Lightning (>= 2.5) adds a FLOPs column and a "Total Flops" line that are all 0 unless the model
sets ``example_input_array`` and Lightning runs an extra forward pass to count; the suite's
models do not, so the column only said "0". The suite's complexity numbers (MACs, parameters,
memory access) come from ``python -m benchmarks.complexity``.
"""
from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary

log = logging.getLogger("lightning.pytorch.callbacks.model_summary")

_FLOPS_COLUMN = "FLOPs"


class SuiteModelSummary(ModelSummary):
    """``ModelSummary`` that leaves out the FLOPs column and the "Total Flops" line."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int = 0,
                  **summarize_kwargs: Any) -> None:
        from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

        columns = [column for column in summary_data if column[0] != _FLOPS_COLUMN]
        try:
            table = _format_summary_table(total_parameters, trainable_parameters, model_size,
                                          total_training_modes, total_flops, *columns)
        except TypeError:  # a Lightning without the FLOPs argument: its own summary has no FLOPs
            return ModelSummary.summarize(summary_data, total_parameters, trainable_parameters, model_size,
                                          total_training_modes, **summarize_kwargs)
        lines = [line for line in table.splitlines() if not line.rstrip().endswith("Total Flops")]
        log.info("\n" + "\n".join(lines))
