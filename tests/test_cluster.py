"""The study on a cluster, with the real engines and no cluster (docs/cluster.md): Hydra's
submitit launcher with submitit's local executor, a SLURM requeue simulated with SLURM's
environment variables, a stand-in ``scontrol`` and the real signal, and ``-m`` with DDP on CPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import compose_config

REPO = Path(__file__).resolve().parents[1]


def tiny(synthetic_dir, *extra: str) -> list[str]:
    return ["task=classification", "data=synthetic", f"paths.synthetic_dir={synthetic_dir}",
            "synthetic.image_size=64", "synthetic.generator.images_per_class=8",
            "synthetic.generator.image_size=72", "batch_size=8", "backbone=mv2_e2",
            "backbone.width_mult=0.35", "num_workers=0", "logger=csv", "trainer.accelerator=cpu",
            *extra]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
            "COG_LOG_DIR": str(tmp_path / "logs"), **extra}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def job_folders(logs: Path) -> list[Path]:
    (sweep,) = (logs / "classification" / "multiruns").iterdir()
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def assert_finished_jobs(logs: Path, seeds: list[int], ranks: int = 1) -> None:
    """One folder per job, ``<num>_<backbone>``, each with its own seed's finished run."""
    jobs = job_folders(logs)
    assert [p.name for p in jobs] == [f"{i}_mv2_e2" for i in range(len(seeds))]
    for job, seed in zip(jobs, seeds, strict=True):
        summary = json.loads((job / "metrics.json").read_text())
        assert summary["diverged"] is False and 0.0 <= summary["metrics"]["test/acc"] <= 1.0
        checkpoint = load(job / "checkpoints" / "last.ckpt")
        assert checkpoint["cogsuite_config"]["seed"] == seed
        assert checkpoint["cogsuite_config"]["trainer"]["devices"] == ranks
        assert json.loads((job / "status.json").read_text())["state"] == "finished"


# --------------------------------------------------------------------------- fast checks
def test_slurm_job_identity(monkeypatch):
    from cogsuite import cluster

    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    assert cluster.slurm_job_id() is None and cluster.slurm_run_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "977")
    assert cluster.slurm_run_id() == "slurm-977" and not cluster.is_requeued_start()
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "970")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_CLUSTER_NAME", "alps")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert cluster.slurm_job_id() == "970_7"  # what `scontrol requeue` takes for an array task
    assert cluster.slurm_run_id() == "slurm-alps-970_7"
    assert cluster.restart_count() == 2 and cluster.is_requeued_start()


def _run_folder(parent: Path, name: str, overrides: list[str], finished: bool = False) -> Path:
    run = parent / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if finished:
        (run / "metrics.json").write_text("{}")
    return run


def test_a_requeued_run_finds_only_its_own_unfinished_folder(tmp_path, monkeypatch):
    from cogsuite.cluster import requeued_run_dir

    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_CLUSTER_NAME", raising=False)
    runs = tmp_path / "classification" / "runs"
    mine = _run_folder(runs, "2026-01-01_10-00-00_mv2_e2_slurm-42", ["seed=1"])
    _run_folder(runs, "2026-01-01_09-00-00_mv2_e2_slurm-42", ["seed=2"])  # same job, other run
    _run_folder(runs, "2026-01-01_10-00-00_mv2_e2_slurm-43", ["seed=1"])  # another job
    _run_folder(runs, "2026-01-01_08-00-00_mv2_e2_slurm-42", ["seed=1"], finished=True)
    new = str(runs / "2026-01-01_11-00-00_mv2_e2_slurm-42")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert requeued_run_dir(new, ["seed=1"]) is None  # a first start always gets a new folder
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_run_dir(new, ["seed=1"]) == str(mine.resolve())
    assert requeued_run_dir(new, ["seed=3"]) is None  # no unfinished run of these overrides
    assert requeued_run_dir(str(runs / "2026-01-01_11-00-00_cog_e2_slurm-42"), ["seed=1"]) is None
    monkeypatch.setenv("SLURM_JOB_ID", "44")
    assert requeued_run_dir(str(runs / "2026-01-01_11-00-00_mv2_e2_slurm-44"), ["seed=1"]) is None


def test_resume_checkpoint_is_the_most_advanced(tmp_path):
    from cogsuite.cluster import resume_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert resume_checkpoint(tmp_path) is None
    for name, step in (("last.ckpt", 20), ("mid_epoch_step0000030.ckpt", 30), ("requeue.ckpt", 33),
                       ("best_epoch003.ckpt", 40)):
        torch.save({"global_step": step}, folder / name)
    assert resume_checkpoint(tmp_path) == folder / "requeue.ckpt"  # best_* is never resumed
    torch.save({"global_step": 33}, folder / "last.ckpt")
    assert resume_checkpoint(tmp_path) == folder / "last.ckpt"  # a tie: the epoch-end one
    (folder / "requeue.ckpt").write_bytes(b"truncated")
    assert resume_checkpoint(tmp_path) == folder / "last.ckpt"
    (tmp_path / "metrics.json").write_text("{}")
    assert resume_checkpoint(tmp_path) is None  # a finished run is not continued


def test_each_local_sweep_job_gets_its_own_gpus():
    from cogsuite.cluster import local_job_gpus

    visible = ["0", "1", "2", "3", "4", "5", "6", "7"]
    assert [local_job_gpus(k, 2, visible) for k in range(5)] == [
        ["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"], ["0", "1"]]
    assert local_job_gpus(3, 1, ["4", "6"]) == ["6"]


def test_launcher_configs_take_the_run_settings(tmp_path):
    """hydra/launcher=slurm asks for what trainer and loader need: one task and GPU per device,
    CPUs for the workers, the signal the requeue callback listens to."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    import cogsuite.run_dirs  # noqa: F401 - the resolvers the configs use (train.py imports it too)
    from tests.helpers import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                          "trainer.accelerator=gpu", "num_workers=6",
                                          "hydra.launcher.partition=gpu"], return_hydra_config=True)
        local = compose("train", overrides=["hydra/launcher=local", "trainer.accelerator=cpu"],
                        return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["cpus_per_task"]) == (4, 4, 7)
    assert launcher["partition"] == "gpu" and launcher["additional_parameters"] == {"requeue": True}
    assert launcher["signal_delay_s"] > 0 and cfg.callbacks.requeue_on_signal.signal == "USR2"
    assert OmegaConf.to_container(local.hydra.launcher, resolve=True)["_target_"].endswith("LocalLauncher")


def test_a_table_rows_sweep_jobs_go_to_the_rows_folder(tmp_path):
    """A sweep job of a table row (experiment=thesis/...) goes to the row's folder, where single
    runs of the row go and where Table 5.5 looks for the Table 5.1 classifiers; other jobs to
    <sweep>/<job number>_<backbone>."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import cogsuite.run_dirs  # noqa: F401 - the resolvers the configs use
    from tests.helpers import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        plain, row, pretrained_from = (
            compose("train", overrides=[f"paths.log_dir={tmp_path}", *extra], return_hydra_config=True)
            for extra in ([], ["experiment=thesis/table5_1_caltech256_cog_e2"],
                          ["experiment=thesis/table5_5_voc2012_cog_e2"]))
    for cfg in (plain, row):
        with open_dict(cfg):
            cfg.hydra.job.num = 4
    sweep = Path(plain.hydra.sweep.dir)
    assert Path(plain.hydra.sweep.dir, plain.hydra.sweep.subdir) == sweep / "4_cog_e2"
    job = Path(row.hydra.sweep.dir, row.hydra.sweep.subdir)  # Hydra joins them so
    assert job.parent == tmp_path / "thesis" / "table5_1" / "caltech256_cog_e2"
    assert job.name == f"{sweep.name.rsplit('_', 1)[0]}_cog_e2_{sweep.name.rsplit('_', 1)[1]}-4"
    assert Path(pretrained_from.backbone.pretrained) == job.parent


# --------------------------------------------------------------------------- real launchers
@pytest.mark.slow
def test_local_launcher_runs_a_ddp_sweep_to_the_end(tmp_path, synthetic_dir):
    """submitit's local executor runs both jobs of the sweep; each job's two DDP ranks are
    submitit tasks that Lightning joins (no process started by Lightning)."""
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "seed=1,2", "hydra/launcher=local", "trainer=ddp",
         "trainer.devices=2", *tiny(synthetic_dir, "trainer.max_epochs=1")],
        cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    assert_finished_jobs(tmp_path / "logs", [1, 2], ranks=2)
    sweep = job_folders(tmp_path / "logs")[0].parent
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert logs.count("MEMBER: 2/2") == 2  # each job's second rank joined


@pytest.mark.slow
def test_basic_launcher_multirun_with_ddp(tmp_path, synthetic_dir):
    """`-m` with trainer=ddp through Hydra's basic launcher: Lightning starts each job's second
    rank as that job's single run in that job's folder, and the second job forms its own group."""
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "seed=1,2", "trainer=ddp", "trainer.devices=2",
         *tiny(synthetic_dir, "trainer.max_epochs=1")],
        cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("MEMBER: 2/2") == 2
    assert_finished_jobs(tmp_path / "logs", [1, 2], ranks=2)
    for job in job_folders(tmp_path / "logs"):
        assert (job / "train_ddp_process_1.log").is_file()  # the child ran in its job's folder


# The first start runs train.py with the requeue callback's batch-end hook paused at step 3
# until the signal has arrived, so the signal reaches a running epoch at a known batch (the
# config and the checkpoints are train.py's own; the second start is plain train.py).
_PAUSE_AT_STEP_3 = """
import runpy, sys, time
from pathlib import Path
from cogsuite.requeue import RequeueOnSignal
marker = Path(sys.argv.pop(1))
original = RequeueOnSignal.on_train_batch_end
def paused(self, trainer, *args):
    if trainer.global_step == 3:
        marker.write_text("paused")
        deadline = time.monotonic() + 120
        while self._received is None and time.monotonic() < deadline:
            time.sleep(0.05)
    return original(self, trainer, *args)
RequeueOnSignal.on_train_batch_end = paused
sys.argv = sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.slow
def test_slurm_requeue_continues_its_own_run_bit_identically(tmp_path, synthetic_dir):
    """SLURM's requeue signal reaches a running training at step 3 of a 2 x 7-step run (epoch 0):
    the checkpoint is written at that batch's end, the stand-in scontrol is asked to requeue
    array task 4240_2, and the process stops. Started again with the same job id (as SLURM
    restarts a requeued job), it continues in the same folder and ends with the weights of an
    uninterrupted run, bit for bit."""
    from train import train

    common = tiny(synthetic_dir, "trainer.max_epochs=2", "test=false",
                  "callbacks.heartbeat.every_s=0")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the OMP_NUM_THREADS=1 processes below
    try:
        train(compose_config("train", common, tmp_path / "reference"))
    finally:
        torch.set_num_threads(previous_threads)
    reference = load(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    assert reference["global_step"] == 14

    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls.txt"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2",
             "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "cogsuite", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
             "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    marker = tmp_path / "paused"
    first = subprocess.Popen([sys.executable, "-c", _PAUSE_AT_STEP_3, str(marker), "train.py", *common],
                             cwd=REPO,
                             env=cli_env(tmp_path, **slurm), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), first.communicate()[1][-3000:]
    first.send_signal(signal.SIGUSR2)  # SLURM: the time limit is near
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    (run,) = (tmp_path / "logs" / "classification" / "runs").iterdir()
    assert run.name.endswith("_mv2_e2_slurm-4240_2")
    assert calls.read_text().split("\n")[0] == "requeue 4240_2"  # the array task, not 4242
    saved = load(run / "checkpoints" / "requeue.ckpt")
    seed_state = next(v for k, v in saved["callbacks"].items() if "EpochSeedCallback" in k)
    assert (saved["epoch"], seed_state["batches_done"]) == (0, saved["global_step"])
    assert saved["global_step"] == 3  # mid-epoch 0, the batch the signal arrived in
    assert not (run / "metrics.json").exists() and not (run / "checkpoints" / "last.ckpt").exists()
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["requeues"], status["slurm_job_id"]) == ("requeued", 1, "4240_2")

    second = subprocess.run([sys.executable, "train.py", *common], cwd=REPO,
                            env=cli_env(tmp_path, **slurm, SLURM_RESTART_COUNT="1"),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "continuing the unfinished run" in second.stdout + second.stderr
    assert list((tmp_path / "logs" / "classification" / "runs").iterdir()) == [run]
    final = load(run / "checkpoints" / "last.ckpt")
    assert final["global_step"] == reference["global_step"]
    assert list(final["state_dict"]) == list(reference["state_dict"])
    for key, value in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["requeues"], status["restarts"]) == ("finished", 1, 1)
    assert len(calls.read_text().splitlines()) == 1  # the second start was not requeued


# --------------------------------------------------------------------------- status view
def _fake_run(root: Path, name: str, seed: int, backbone: str = "mv2_e2", metrics: dict | None = None,
              status: dict | None = None) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        f"task_name: classification\nseed: {seed}\nbackbone:\n  name: {backbone}\n"
        "trainer:\n  max_epochs: 60\n")
    (run / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      data: flowers\n")
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    if status is not None:
        (run / "status.json").write_text(json.dumps(status))
    return run


def test_status_view_says_where_every_run_stands(tmp_path, capsys):
    from datetime import datetime, timedelta, timezone

    from analysis.report import main

    now = datetime.now(timezone.utc)
    recent, old = (now - timedelta(seconds=30)).isoformat(), (now - timedelta(hours=3)).isoformat()
    sweep = tmp_path / "logs" / "classification" / "multiruns" / "s"
    _fake_run(sweep, "0_mv2_e2", 1, metrics={"metrics": {"test/acc": 0.5}, "diverged": False},
              status={"state": "finished", "requeues": 2})
    _fake_run(sweep, "1_mv2_e2", 2, status={"state": "running", "heartbeat": recent, "host": "gpu7",
                                            "slurm_job_id": "88_1", "epoch": 3, "step": 120})
    _fake_run(sweep, "2_mv2_e2", 3, status={"state": "requeued", "requeues": 1, "epoch": 1, "step": 40})
    _fake_run(sweep, "3_cog_e2", 1, backbone="cog_e2",
              status={"state": "failed", "error": "DataError: flowers/daisy/1.jpg is truncated"})
    _fake_run(sweep, "4_cog_e2", 2, backbone="cog_e2", status={"state": "running", "heartbeat": old})
    _fake_run(sweep, "5_cog_e2", 3, backbone="cog_e2",
              metrics={"metrics": {"test/acc": float("nan")}, "diverged": True})
    assert main(["--status", str(tmp_path / "logs")]) is None
    out = capsys.readouterr().out
    rows = {line.split(" | ")[1].rsplit("/", 1)[-1]: line for line in out.splitlines()
            if line.startswith("| ") and "_e2" in line}
    assert rows["0_mv2_e2"].startswith("| finished |") and "| 2 |" in rows["0_mv2_e2"]
    assert rows["1_mv2_e2"].startswith("| running |")
    assert "last heartbeat 30 s ago on gpu7, SLURM job 88_1, epoch 3, step 120" in rows["1_mv2_e2"]
    assert rows["2_mv2_e2"].startswith("| requeued |") and "| 1 |" in rows["2_mv2_e2"]
    assert rows["3_cog_e2"].startswith("| failed |") and "is truncated" in rows["3_cog_e2"]
    assert rows["4_cog_e2"].startswith("| running? |") and "3.0 h ago" in rows["4_cog_e2"]
    assert rows["5_cog_e2"].startswith("| diverged |")
    assert "6 runs: 1 diverged, 1 failed, 1 finished, 1 requeued, 1 running, 1 running?" in out
    assert "classification · flowers · mv2_e2: 1 of 3 seeds finished (1); in progress: 2, 3" in out
    assert "classification · flowers · cog_e2: 0 of 3 seeds finished" in out
