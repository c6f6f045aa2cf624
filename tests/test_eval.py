"""eval.py: single-process vs 2-process DDP (gloo) numbers are identical (no padded samples)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import compose_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_evaluation_equals_single_process(tmp_path):
    from eval import evaluate
    from train import train

    # 7 classes x 1 held-out image: an odd evaluation set, which a padding sampler would
    # split 4 + 4 by repeating one image.
    overrides = ["task=classification", "data=synthetic", f"paths.synthetic_dir={tmp_path / 'data'}",
                 "backbone=mv2_e2", "backbone.width_mult=0.35", "synthetic.num_classes=7",
                 "synthetic.image_size=64", "synthetic.generator.images_per_class=10",
                 "synthetic.generator.image_size=72", "batch_size=4", "trainer.max_epochs=1"]
    train(compose_config("train", overrides, tmp_path / "train"))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"

    single = evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "+data.batch_size=1"],
                                     tmp_path / "eval1"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COG_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "eval.py", f"ckpt_path={ckpt}", "trainer=ddp", "trainer.devices=2",
         "trainer.accelerator=cpu", "num_workers=0", "+data.batch_size=1",
         f"hydra.run.dir={tmp_path / 'eval2'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr
    ddp = json.loads(Path(str(ckpt) + ".eval.json").read_text())["metrics"]
    for key in ("test/acc", "test/loss"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), (key, ddp[key], single[key])
