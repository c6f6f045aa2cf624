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
