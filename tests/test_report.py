"""analysis.report on fake run folders with known metrics: table values, t intervals checked
against a hand computation, paired differences, skipped runs, recipe splits, grouping by
backbone config, structural columns, output files and errors."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from analysis.pareto import pareto_front
from analysis.report import build_report, main, write_outputs
from analysis.stats import paired_difference, summarize
from tests.helpers import CONFIG_DIR

# Student-t 0.975 quantiles from a printed table (not from scipy): df=2 and df=3.
T_975 = {2: 4.302652729911275, 3: 3.182446305284263}


def hand_interval(values: list[float]) -> tuple[float, float, float, float]:
    """mean, sample std and the 95% t interval, computed from the definitions."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T_975[n - 1] * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


_COMPOSED: dict[tuple, dict] = {}


def composed(task: str, backbone: str, overrides: tuple[str, ...] = ()) -> dict:
    """The config train.py would store for this run (unresolved), composed once per test run."""
    key = (task, backbone, overrides)
    if key not in _COMPOSED:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            cfg = compose("train", overrides=[f"task={task}", f"backbone={backbone}",
                                              "data=synthetic", *overrides])
        _COMPOSED[key] = OmegaConf.to_container(cfg, resolve=False)
    return json.loads(json.dumps(_COMPOSED[key]))


def make_run(folder: Path, backbone: str = "mv2_e2", seed: int = 1, metrics: dict | None = None,
             task: str = "classification", overrides: tuple[str, ...] = (),
             backbone_extra: dict | None = None, diverged: bool = False) -> Path:
    """A run folder as train.py leaves it: .hydra/config.yaml, .hydra/hydra.yaml and, when
    ``metrics`` is given, metrics.json."""
    config = composed(task, backbone, overrides)
    config["seed"] = seed
    config["backbone"].update(backbone_extra or {})
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    choices = {"task": task, "backbone": backbone, "data": "synthetic"}
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}),
                   folder / ".hydra" / "hydra.yaml")
    if metrics is not None:
        payload = {"metrics": metrics, "best_checkpoint": str(folder / "best.ckpt")}
        if diverged:
            payload["diverged"] = True
        (folder / "metrics.json").write_text(json.dumps(payload))
    return folder


MV2 = {1: 0.80, 2: 0.84, 3: 0.78}
COG = {1: 0.83, 2: 0.85, 3: 0.82}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """mv2_e2 and cog_e2 over seeds 1-3, an unfinished cog_e2 run (seed 4) and a diverged
    mv2_e2 run (seed 5), in folders named unlike train.py's."""
    root = tmp_path / "logs"
    for seed in MV2:
        make_run(root / "sweep" / f"a{seed}", "mv2_e2", seed, {"test/acc": MV2[seed], "val/acc": 0.5})
        make_run(root / "sweep" / "deeper" / f"b{seed}", "cog_e2", seed, {"test/acc": COG[seed]})
    make_run(root / "crashed", "cog_e2", 4, metrics=None)
    make_run(root / "blown_up", "mv2_e2", 5, {"test/acc": 0.125}, diverged=True)
    return root


def markdown_rows(text: str, title: str) -> list[list[str]]:
    """The body cells of the printed markdown table under ``### <title>``."""
    block = text.split(f"### {title}\n\n", 1)[1].split("\n\n", 1)[0]
    lines = block.splitlines()[2:]  # past the header and the rule
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def _csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_table_values_intervals_and_paired_difference(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    main([str(sweep), "--no-structure", "--out", str(out)])
    printed = capsys.readouterr().out

    rows = {row[0]: row for row in markdown_rows(printed, "Image classification (test/acc)")}
    mean, std, low, high = hand_interval([100 * v for v in MV2.values()])
    assert (mean, std) == pytest.approx((80.6667, 3.0551), abs=1e-4)
    assert rows["mv2_e2"][1:4] == [f"{mean:.2f} ± {std:.2f}", f"[{low:.2f}, {high:.2f}]", "3"]
    mean, std, low, high = hand_interval([100 * v for v in COG.values()])
    assert rows["cog_e2"][1:4] == [f"{mean:.2f} ± {std:.2f}", f"[{low:.2f}, {high:.2f}]", "3"]

    diffs = [100 * (COG[s] - MV2[s]) for s in (1, 2, 3)]  # 3, 1, 4 points
    mean, std, low, high = hand_interval(diffs)
    assert mean == pytest.approx(8 / 3)
    (row,) = markdown_rows(printed, "cog - mv2, paired by seed (test/acc)")
    assert row == ["classification", "synthetic", "2", "mv2_e2", "cog_e2", "3",
                   f"{mean:.2f} ± {std:.2f}", f"[{low:.2f}, {high:.2f}]", "1 2 3"]

    groups = {row["backbone"]: row for row in _csv(out / "groups.csv")}
    assert groups["mv2_e2"]["n"] == "3" and groups["mv2_e2"]["seeds"] == "1 2 3"
    assert float(groups["mv2_e2"]["mean"]) == pytest.approx(sum(MV2.values()) / 3)  # not 0.125
    _, _, low, high = hand_interval(list(MV2.values()))
    assert float(groups["mv2_e2"]["ci_low"]) == pytest.approx(low)
    assert float(groups["mv2_e2"]["ci_high"]) == pytest.approx(high)
    (diff,) = _csv(out / "differences.csv")
    assert (diff["baseline"], diff["candidate"], diff["expansion"]) == ("mv2_e2", "cog_e2", "2")
    assert float(diff["mean_difference"]) == pytest.approx(sum(diffs) / 300)
    assert (out / "report.md").read_text() in printed


def test_incomplete_and_diverged_runs_are_listed_and_skipped(sweep, tmp_path, capsys):
    main([str(sweep), "--no-structure", "--out", str(tmp_path / "r")])
    printed = capsys.readouterr().out
    assert "8 runs found, 6 used in 2 groups, 2 skipped." in printed
    skipped = printed.split("### Skipped runs (2)", 1)[1]
    assert "crashed: no metrics.json: crashed or still running" in skipped
    assert "blown_up: diverged" in skipped
    statuses = {Path(row["path"]).name: row["status"] for row in _csv(tmp_path / "r" / "runs.csv")}
    assert statuses["crashed"] == "skipped" and statuses["blown_up"] == "diverged"
    assert statuses["a1"] == "used"


def test_folders_that_are_not_usable_runs_say_why(tmp_path, capsys):
    make_run(tmp_path / "good", "cog_e2", 1, {"test/acc": 0.6})
    (tmp_path / "no_config").mkdir()
    (tmp_path / "no_config" / "metrics.json").write_text(json.dumps({"metrics": {"test/acc": 0.9}}))
    evaluation = tmp_path / "eval_run" / ".hydra"
    evaluation.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"task_name": "eval", "seed": 42}), evaluation / "config.yaml")
    make_run(tmp_path / "no_metric", "cog_e2", 2, {"val/acc": 0.5})
    report = build_report([tmp_path], structure=False)
    reasons = {run.path.name: reason for run, reason in report.skipped}
    assert reasons == {"no_config": "no .hydra/config.yaml (cannot tell what was trained)",
                       "eval_run": "not a train.py run (task_name=eval)",
                       "no_metric": "metrics.json has no test/acc"}
    assert [r.summary.n for r in report.results] == [1]


def test_one_seed_says_there_is_no_interval(tmp_path, capsys):
    make_run(tmp_path / "m", "mv2_e2", 1, {"test/acc": 0.5})
    make_run(tmp_path / "c", "cog_e2", 1, {"test/acc": 0.6})
    main([str(tmp_path), "--no-structure", "--out", str(tmp_path / "r")])
    printed = capsys.readouterr().out
    rows = {row[0]: row for row in markdown_rows(printed, "Image classification (test/acc)")}
    assert rows["mv2_e2"][1:4] == ["50.00", "n=1: no interval", "1"]
    (row,) = markdown_rows(printed, "cog - mv2, paired by seed (test/acc)")
    assert row[5:] == ["1", "10.00", "n=1: no interval", "1"]


def test_different_recipes_are_never_averaged_and_the_keys_are_named(tmp_path):
    for seed in (1, 2):
        make_run(tmp_path / f"short{seed}", "cog_e2", seed, {"test/acc": 0.5},
                 overrides=("synthetic.max_epochs=5",))
        make_run(tmp_path / f"long{seed}", "cog_e2", seed, {"test/acc": 0.7},
                 overrides=("synthetic.max_epochs=20", "num_workers=0"))  # workers: not a recipe
    # The same recipe written another way: trainer.max_epochs=20 instead of ${synthetic.max_epochs}
    make_run(tmp_path / "long3", "cog_e2", 3, {"test/acc": 0.7}, overrides=("trainer.max_epochs=20",))
    report = build_report([tmp_path], structure=False)
    found = sorted((r.group.recipe_label, r.summary.n, round(r.summary.mean, 6))
                   for r in report.results)
    assert found == [("synthetic.max_epochs=20, trainer.max_epochs=20", 3, 0.7),
                     ("synthetic.max_epochs=5, trainer.max_epochs=5", 2, 0.5)]
    assert any("2 recipes, never averaged together; they differ in synthetic.max_epochs, "
               "trainer.max_epochs" in note for note in report.notes)
    assert "top-1 % (synthetic [synthetic.max_epochs=5, trainer.max_epochs=5])" in report.text


def test_backbone_config_groups_new_keys_but_not_implementation_or_weights(tmp_path):
    cog4 = {"pointwise": {"name": "cog", "groups": 4, "overlap": 1, "impl": "auto"}}
    make_run(tmp_path / "a", "cog_e2", 1, {"test/acc": 0.6}, backbone_extra=cog4)
    make_run(tmp_path / "b", "cog_e2", 2, {"test/acc": 0.7},
             backbone_extra={"pointwise": {**cog4["pointwise"], "impl": "roll"}})
    make_run(tmp_path / "c", "cog_e2", 1, {"test/acc": 0.8},
             backbone_extra={"pointwise": {**cog4["pointwise"], "groups": 8}})
    report = build_report([tmp_path], structure=False)
    labels = {r.group.label: r.summary.n for r in report.results}
    assert labels == {"cog_e2 (pointwise.groups=4)": 2, "cog_e2 (pointwise.groups=8)": 1}


def test_pretrained_is_a_recipe_difference_not_a_backbone(tmp_path):
    make_run(tmp_path / "a", "cog_e2", 1, {"test/acc": 0.6}, backbone_extra={"pretrained": "/x/1.ckpt"})
    make_run(tmp_path / "b", "cog_e2", 2, {"test/acc": 0.7}, backbone_extra={"pretrained": "/x/2.ckpt"})
    make_run(tmp_path / "c", "cog_e2", 1, {"test/acc": 0.8})
    report = build_report([tmp_path], structure=False)
    assert sorted((r.group.recipe_label, r.summary.n) for r in report.results) == [
        ("backbone.pretrained=checkpoint", 2), ("backbone.pretrained=null", 1)]


def test_baseline_and_candidate_name_any_two_groups(tmp_path, capsys):
    for seed, (a, b) in {1: (0.5, 0.6), 2: (0.55, 0.6)}.items():
        make_run(tmp_path / f"m2_{seed}", "mv2_e2", seed, {"test/acc": a})
        make_run(tmp_path / f"c4_{seed}", "cog_e4", seed, {"test/acc": b})
    report = build_report([tmp_path], structure=False)
    assert report.comparisons == []  # mv2 vs cog pairs the same expansion factor only
    report = build_report([tmp_path], baseline="mv2_e2", candidate="cog_e4", structure=False)
    (comparison,) = report.comparisons
    assert comparison.paired.differences == pytest.approx((0.1, 0.05))
    main([str(tmp_path), "--baseline", "mv2_e2", "--candidate", "cog_e4", "--no-structure",
          "--no-plot", "--out", str(tmp_path / "r")])
    assert "cog_e4 - mv2_e2, paired by seed (test/acc)" in capsys.readouterr().out


def test_unpaired_seeds_are_left_out_and_named(tmp_path):
    for seed in (1, 2, 3):
        make_run(tmp_path / f"m{seed}", "mv2_e2", seed, {"test/acc": 0.5 + seed / 100})
    for seed in (2, 3):
        make_run(tmp_path / f"c{seed}", "cog_e2", seed, {"test/acc": 0.6})
    (comparison,) = build_report([tmp_path], structure=False).comparisons
    assert comparison.paired.seeds == (2, 3) and comparison.paired.baseline_only == (1,)


def test_detection_table_has_ms_per_image_and_filters_select(tmp_path):
    for seed in (1, 2):
        make_run(tmp_path / f"d{seed}", "cog_e2", seed,
                 {"test/map": 0.4 + seed / 100, "test/ms_per_image": 6.0 + seed}, task="detection")
        make_run(tmp_path / f"c{seed}", "cog_e2", seed, {"test/acc": 0.7})
    report = build_report([tmp_path], task="detection", structure=False)
    (table,) = report.tables
    # --no-structure: no params / MMACs / KiB columns
    assert table.headers == ["backbone", "mAP % (synthetic)", "95% CI", "n", "ms/image"]
    assert table.rows[0][1] == "41.50 ± 0.71" and table.rows[0][4] == "7.50 ± 0.71"
    with pytest.raises(ValueError, match="found task/dataset: classification/synthetic"):
        build_report([tmp_path], datasets=["voc2007"], structure=False)


def test_structural_columns_rebuild_each_model_once(tmp_path):
    from benchmarks.complexity import count_parameters
    from tasks.classification import ClassificationTask

    for seed in (1, 2, 3):
        make_run(tmp_path / f"m{seed}", "mv2_e2", seed, {"test/acc": 0.5})
        make_run(tmp_path / f"c{seed}", "cog_e2", seed, {"test/acc": 0.6})
    report = build_report([tmp_path])
    structures = {r.group.label: r.structure for r in report.results}
    for name in ("mv2_e2", "cog_e2"):
        model = ClassificationTask(backbone=name, num_classes=8)  # data=synthetic: 8 classes
        assert structures[name].params == count_parameters(model)
        assert structures[name].image_size == 96  # the synthetic classification input size
        tensor_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        # The weights file: every tensor (BatchNorm statistics too) plus the file's structure.
        assert tensor_bytes / 1024 < structures[name].kib < tensor_bytes / 1024 * 1.05
    assert structures["cog_e2"].params < structures["mv2_e2"].params
    assert structures["cog_e2"].macs < structures["mv2_e2"].macs

    written = write_outputs(report, tmp_path / "out", "markdown")
    plot = tmp_path / "out" / "pareto_classification_synthetic.png"
    assert plot in written and plot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name, thesis_kb", [("mv2_e2", 4180), ("mv2_e6", 8960)])
def test_model_size_is_the_thesis_model_size(name, thesis_kb):
    """Thesis Table 5.1, Flowers (5 classes): its "Model size (KB)" is the saved state_dict in
    KiB; the file's structure (key names, zip) makes the last few KiB differ."""
    from analysis.structure import saved_state_dict_kib
    from tasks.classification import ClassificationTask

    kib = saved_state_dict_kib(ClassificationTask(backbone=name, num_classes=5))
    assert kib == pytest.approx(thesis_kb, rel=0.005)


def test_structure_cache_builds_a_distinct_model_once(tmp_path):
    from analysis.runs import load_run
    from analysis.structure import StructureCache

    runs = [load_run(make_run(tmp_path / f"r{s}{b}", b, s, {"test/acc": 0.5}))
            for s in (1, 2, 3) for b in ("mv2_e2", "mv2_e4")]
    cache = StructureCache()
    for run in runs:
        cache.get(run)
    assert cache.builds == 2


def test_latex_format(sweep, tmp_path, capsys):
    main([str(sweep), "--no-structure", "--no-plot", "--format", "latex", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert r"\begin{tabular}" in printed and r"$\pm$" in printed and r"mv2\_e2" in printed
    assert r"top-1 \% (synthetic)" in printed
    assert (tmp_path / "report.tex").is_file()


def test_missing_path_and_no_runs_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty")])
    assert "no run below" in capsys.readouterr().err
    make_run(tmp_path / "only_crashed", metrics=None)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "only_crashed")])
    captured = capsys.readouterr()
    assert "no metrics.json" in captured.out and "none of the 1 runs found is complete" in captured.err


def test_stats_against_hand_computation():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    mean, std, low, high = hand_interval([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean, s.std, s.ci_low, s.ci_high) == pytest.approx((4, mean, std, low, high))
    assert not summarize([0.7]).has_interval and summarize([0.7]).std is None
    paired = paired_difference({1: 0.5, 2: 0.6}, {1: 0.55, 2: 0.62, 3: 0.9})
    assert paired.differences == pytest.approx((0.05, 0.02)) and paired.candidate_only == (3,)


def test_pareto_front():
    # (cost, metric): the third is beaten by the first (cheaper and better).
    assert pareto_front([(1.0, 0.5), (2.0, 0.7), (1.5, 0.4), (3.0, 0.7)]) == [0, 1]
