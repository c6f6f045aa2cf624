"""A CSV logger that continues an existing ``metrics.csv`` instead of deleting it.

Lightning's ``CSVLogger`` removes ``metrics.csv`` when its folder already holds logs. A resumed
run logs into its original run folder (``tasks/run_dirs.py``), so its rows must be appended to
the earlier ones: this writer starts from the existing file's columns and appends (a new column
rewrites the file with the union header, keeping every row, as Lightning already does).
"""
from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning's version deletes an existing metrics.csv; keep it and adopt its header.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                header = next(csv.reader(handle), [])
            self.metrics_keys = sorted(set(header))
            if header != self.metrics_keys:  # rows are appended in sorted-column order
                self._rewrite_with_new_header(self.metrics_keys)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resumed run (rows are appended)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
