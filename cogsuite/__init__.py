"""The suite's run machinery, shared by train.py, eval.py, deploy/ and analysis/: building objects
from the Hydra config, reading and writing checkpoints, run folders, reproducibility, divergence
handling, logging. Nothing here is a task or a dataset (those register in tasks/ and data/)."""
