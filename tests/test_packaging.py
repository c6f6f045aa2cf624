"""Packaging: an install adds one top-level name, ``cogsuite``; the project's folders (data, tasks,
heads, ...) ship inside it and are importable, under their own names, only once ``cogsuite`` is
imported (the entry points do it), so they never collide with a user's own ``data`` or ``tasks``."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_install_declares_only_the_cogsuite_namespace():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = config["tool"]["setuptools"]
    assert all(p == "cogsuite" or p.startswith("cogsuite.") for p in setuptools["packages"])
    assert "py-modules" not in setuptools
    # The project's packages are the top-level folders with an __init__.py and their subpackages;
    # hidden folders (.git, a .venv inside the checkout as CI makes one) and build output are not.
    tops = [d for d in REPO.iterdir() if d.is_dir() and (d / "__init__.py").is_file()
            and not d.name.startswith(".") and d.name not in ("tests", "cogsuite", "build")]
    packages = {".".join(p.parent.relative_to(REPO).parts) for top in tops for p in top.rglob("__init__.py")}
    shipped = {p.removeprefix("cogsuite._project.") for p in setuptools["packages"]
               if p.startswith("cogsuite._project.")}
    assert shipped == packages, "list every package folder (subpackages too) in pyproject.toml"
    assert all(v.startswith("cogsuite.cli:") for v in config["project"]["scripts"].values())


@pytest.mark.slow
def test_wheel_installs_only_cogsuite_and_runs_from_anywhere(tmp_path):
    wheels, site, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    # Built from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".*", "venv", "tests", "logs", "outputs", "multirun", "datasets", "build", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("cogsuite-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    assert {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")} <= {"cogsuite", "bin"}
    probe = """
import importlib.util as u
assert u.find_spec("data") is None and u.find_spec("tasks") is None and u.find_spec("train") is None
import cogsuite, data, train
from tasks.registry import list_tasks
root = cogsuite.project_root()
assert root.name == "_project" and data.__file__.startswith(str(root)), data.__file__
assert (root / "configs" / "train.yaml").is_file() and list_tasks()
print("ok")
"""
    # -S: the test venv's own site hooks (e.g. an editable install of the checkout) stay out.
    env = {"PYTHONPATH": f"{site}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
