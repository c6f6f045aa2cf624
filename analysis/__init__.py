"""Analyses of trained checkpoints (per-class accuracy, confusion matrix)."""
