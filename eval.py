"""Evaluate a checkpoint of this suite on its task's test split.

    python eval.py ckpt_path=logs/classification/runs/.../checkpoints/best_epoch007.ckpt
    python eval.py ckpt_path=PATH paths.data_dir=/data trainer=ddp trainer.devices=2

Task, backbone and data settings are rebuilt from the config stored in the checkpoint; only
this suite's own task and datamodule classes are ever built from it (``cogsuite.suite_checkpoint``).
The metrics table is printed and written as JSON next to the checkpoint (PATH.eval.json).
The work is done by ``cogsuite.evaluation``; this file is the Hydra entry point.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

import cogsuite.run_dirs  # noqa: F401 - registers the run-folder resolvers used by configs/hydra
from cogsuite.evaluation import evaluate, load_task, read_suite_checkpoint, run_config  # noqa: F401
from cogsuite.runtime import exit_on_user_error


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
