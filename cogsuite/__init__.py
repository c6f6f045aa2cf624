"""The suite's run machinery, shared by train.py, eval.py, deploy/ and analysis/: building objects
from the Hydra config, reading and writing checkpoints, run folders, reproducibility, divergence
handling, logging. Nothing here is a task or a dataset (those register in tasks/ and data/).

It is also the one name an install of the suite adds to site-packages: the project's folders
(``tasks``, ``data``, ``heads``, ...) are shipped inside it as ``cogsuite/_project`` and keep their
import names, which this module makes importable by putting the project root on ``sys.path``
(in a checkout or an editable install the root is the checkout itself). Running from the project
root (``python train.py``, ``python -m benchmarks.throughput``) needs none of this.
"""
import sys
from pathlib import Path


def project_root() -> Path:
    """The folder holding train.py, configs/ and the project's packages."""
    installed = Path(__file__).resolve().with_name("_project")
    return installed if (installed / "train.py").is_file() else Path(__file__).resolve().parent.parent


if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))
