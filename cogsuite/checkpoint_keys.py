"""The entries this suite adds to every Lightning checkpoint (dependency-free, so tasks/ writing
them and cogsuite.suite_checkpoint reading them share one definition without an import cycle)."""

SUITE_KEY = "cogsuite"  # {task, class_path, backbone, ...}: marks checkpoints written by train.py
CONFIG_KEY = "cogsuite_config"  # the resolved run config
