"""Hydra callback for hyperparameter searches: after the Optuna sweeper has written
``optimization_results.yaml`` (best parameters and value), name the best trial itself in
``<sweep dir>/best_trial.yaml``: its number, run folder, optimised value, parameters and
checkpoints, so the winning run can be evaluated or resumed without searching for it."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
BEST_TRIAL_FILE = "best_trial.yaml"


def best_trial_summary(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The best trial of the search in ``sweep_dir`` (``analysis.search``'s matching of the
    sweeper's best parameters and value to the trials' overrides and metrics), or None."""
    from analysis.search import find_searches, search_table

    searches = find_searches([sweep_dir])
    if not searches:
        return None
    search = searches[0]
    table = search_table(search)
    best = next((row for row in table.rows if row[0].endswith("(best)")), None)
    if best is None:
        return None
    number = int(best[0].split()[0])
    run = next(r for r in search.trials if r.path.name.split("_", 1)[0] == str(number))
    checkpoints = sorted(str(p) for p in (run.path / "checkpoints").glob("*.ckpt"))
    return {"trial": number, "run_folder": str(run.path), "value": search.best_value,
            "metric": table.headers[len(search.best_params) + 1], "params": search.best_params,
            "checkpoints": checkpoints}


class WriteBestTrial(Callback):
    """``hydra.callbacks.best_trial`` in ``configs/hparams_search/*.yaml``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summary = best_trial_summary(sweep_dir)
        if summary is None:
            log.warning("no best trial found in %s (no optimization_results.yaml, or no trial "
                        "matches it)", sweep_dir)
            return
        OmegaConf.save(OmegaConf.create(summary), sweep_dir / BEST_TRIAL_FILE)
        log.info("best trial %d: %s (%s = %s)", summary["trial"], summary["run_folder"],
                 summary["metric"], summary["value"])
