"""Puts the repository root on sys.path so the top-level packages import in tests."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
