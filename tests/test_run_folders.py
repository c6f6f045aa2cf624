"""One writer per run folder, and a run folder's records match what happened: the run-folder
lock (second writer refused, released after a crash), stale checkpoint temporaries removed, a
finished run or another configuration continued in a new folder that records its origin,
changed optimizer settings on resume refused, and the report reading the configuration a run
finished with."""
from __future__ import annotations

from omegaconf import OmegaConf

from analysis.report import build_report
from tests.test_report import composed, make_run


def test_report_sees_the_configuration_a_resumed_run_finished_with(tmp_path):
    for seed in (1, 2, 3):
        make_run(tmp_path / f"short{seed}", "cog_e2", seed, {"test/acc": 0.5},
                 overrides=("synthetic.max_epochs=1",))
    extended = make_run(tmp_path / "extended", "cog_e2", 4, {"test/acc": 0.9},
                        overrides=("synthetic.max_epochs=1",))
    # Resumed in place with trainer.max_epochs=2: that invocation's config, as cogsuite.run_dirs writes it.
    later = composed("classification", "cog_e2", ("synthetic.max_epochs=1", "trainer.max_epochs=2"))
    later["seed"] = 4
    for stamp in ("2026-01-01_00-00-00_aaaa0000", "2026-01-02_00-00-00_bbbb0000"):
        (extended / ".hydra" / f"resume_{stamp}").mkdir()
        OmegaConf.save(OmegaConf.create(later), extended / ".hydra" / f"resume_{stamp}" / "config.yaml")
    report = build_report([tmp_path], structure=False)
    found = sorted((r.summary.n, round(r.summary.mean, 6)) for r in report.results)
    assert found == [(1, 0.9), (3, 0.5)]  # never one recipe of n=4


# --------------------------------------------------------------------------- the run-folder lock
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from cogsuite.resume import check_training_settings, in_place_problem  # noqa: E402
from cogsuite.run_lock import RunFolderInUseError, RunFolderLock, remove_stale_temporaries  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2]); from cogsuite.run_lock import RunFolderLock; "
         "lock = RunFolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)")


def _holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir), str(REPO)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_refuses_a_second_writer_and_is_released_after_a_crash(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        with pytest.raises(RunFolderInUseError, match=rf"run folder {run} is in use by process {holder.pid} on "):
            RunFolderLock(run).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no chance to release anything
        holder.wait()
    # The dead holder's lock file is still there, but its lock died with it.
    assert json.loads((run / ".run.lock").read_text())["pid"] == holder.pid
    with RunFolderLock(run) as lock:
        assert lock.held and json.loads((run / ".run.lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunFolderInUseError):  # also a second opener in the same process
            RunFolderLock(run).acquire()
    RunFolderLock(run).acquire().release()  # released on exit from the block


def test_stale_checkpoint_temporaries_are_removed(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = [folder / ".mid_epoch_step0000300.ckpt.4242-0a1b2c3d.tmp", folder / ".last.ckpt.17-ffffffff.tmp"]
    for path in stale:
        path.write_bytes(b"PK half a checkpoint")
    (folder / "last.ckpt").write_bytes(b"complete")
    (folder / ".notes.tmp").write_bytes(b"not ours")
    assert remove_stale_temporaries(tmp_path) == sorted(stale)
    assert sorted(p.name for p in folder.iterdir()) == [".notes.tmp", "last.ckpt"]


# --------------------------------------------------------------------------- where a resume goes
def _run_folder(tmp_path: Path, overrides: list[str], finished: bool) -> Path:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    if finished:
        (run / "metrics.json").write_text("{}")
    return run


def test_only_an_unfinished_run_with_its_own_settings_continues_in_place(tmp_path):
    started = ["task=classification", "backbone=mv2_e2", "model.optimizer.lr=0.01"]
    run = _run_folder(tmp_path, started, finished=False)
    same = [*reversed(started), f"ckpt_path={run}/checkpoints/last.ckpt", "num_workers=0", "paths.log_dir=/x"]
    assert in_place_problem(run, same) is None
    assert in_place_problem(run, None) is None
    assert in_place_problem(run, [*same, "trainer.max_epochs=2"]) == \
        "the settings differ from that run's (trainer.max_epochs=2)"
    (run / "metrics.json").write_text("{}")
    assert "has finished" in in_place_problem(run, same)
    (run / "metrics.json").unlink()
    (run / ".hydra" / "overrides.yaml").unlink()
    assert "settings of the run" in in_place_problem(run, same)


def test_changed_optimizer_settings_on_resume_are_refused_in_one_line():
    checkpoint = {"cogsuite_config": {"model": {"optimizer": {"name": "adamw", "lr": 0.001},
                                                "scheduler": {"name": "cosine"}}}}
    same = OmegaConf.create({"model": {"optimizer": {"name": "adamw", "lr": 0.001}, "scheduler": {"name": "cosine"}}})
    check_training_settings(checkpoint, same, "run/checkpoints/last.ckpt")
    other = OmegaConf.create({"model": {"optimizer": {"name": "adamw", "lr": 0.002}, "scheduler": {"name": "cosine"}}})
    with pytest.raises(Exception, match=r"model.optimizer.lr=0.002 \(checkpoint: 0.001\).*backbone.pretrained="
                                        r"run/checkpoints/last.ckpt") as error:
        check_training_settings(checkpoint, other, "run/checkpoints/last.ckpt")
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_finished_run_is_never_rewritten_and_a_second_writer_is_refused(tmp_path, synthetic_dir):
    """Through the command line: a finished 1-epoch run continued with trainer.max_epochs=2
    trains in a new folder recording its origin (the finished run's files are untouched);
    a resume with another lr is refused in one line and leaves no folder; a resume while
    another process holds the run folder is refused."""
    from tests.test_reliability_runs import run_cli, tiny

    common = tiny(synthetic_dir, "num_workers=0", "logger=csv", "test=false", "trainer.max_epochs=1",
                  "synthetic.generator.images_per_class=4")
    first = run_cli(["train.py", *common], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = tmp_path / "logs" / "classification" / "runs"
    (run,) = runs.iterdir()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log"}
    last = run / "checkpoints" / "last.ckpt"

    refused = run_cli(["train.py", *common, f"ckpt_path={last}", "model.optimizer.lr=0.5"], tmp_path)
    assert refused.returncode == 2 and "cannot resume from" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0, refused.stderr[-2000:]
    assert list(runs.iterdir()) == [run]  # no empty folder left behind

    longer = run_cli(["train.py", *common[:-2], "trainer.max_epochs=2", "synthetic.generator.images_per_class=4",
                      f"ckpt_path={last}"], tmp_path)
    assert longer.returncode == 0, longer.stderr[-3000:]
    (new,) = set(runs.iterdir()) - {run}
    origin = json.loads((new / "origin.json").read_text())
    assert origin["started_from_checkpoint"] == str(last) and "has finished" in origin["reason_for_a_new_run_folder"]
    assert json.loads((new / "metrics.json").read_text())["origin"] == origin
    assert torch_load(new / "checkpoints" / "last.ckpt")["epoch"] == 1
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log"}
    assert after == before  # metrics, checkpoints, configs of the finished run unchanged

    (new / "metrics.json").unlink()  # pretend the new run is still going, held by another process
    from train import train
    from tests.helpers import compose_config

    cfg = compose_config("train", [*common, f"ckpt_path={new / 'checkpoints' / 'last.ckpt'}"], new)
    holder = _holder(new)
    try:
        with pytest.raises(RunFolderInUseError, match=f"is in use by process {holder.pid}"):
            train(cfg)
    finally:
        holder.kill()
        holder.wait()


def torch_load(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
