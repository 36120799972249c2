"""The main job on synthetic data, pinned: candidate hashes and measured figures stay exactly what they
were when these pins were taken, so a change that moves code without meaning to change behaviour
(a refactoring) is checked against the job's real output.

The pins come from torch's CPU kernels on x86-64 and are reproducible run to run on one machine kind.
After an intended change (a new training recipe, another torch or Vela), rerun the job with the
config below and replace tests/data/main_job_pins.json, saying why in the commit.
"""

import json
from pathlib import Path

import pytest

from harness.cli import main
from results.store import Store

PINS = Path(__file__).parent / "data" / "main_job_pins.json"
CONFIG = """
[run]
dataset = "synthetic"
strategies = ["uniform", "udc", "random"]
budgets = ["size_bound=30KB"]
[search]
bits = [8, 2]
nonzero = [1.0, 0.5]
pretrain_epochs = 1
finetune_steps = 6
batch_size = 64
[measure]
eval_samples = 64
calibration_samples = 32
[udc]
pretrain_epochs = 1.0
pretrain_batch_size = 32
warmup_steps = 16
search_steps = 96
batch_size = 16
finetune_steps = 32
finetune_batch_size = 32
random_trials = 2
validation_images = 128
"""


@pytest.mark.slow
def test_the_main_job_gives_the_pinned_candidates_and_figures(tmp_path):
    config = tmp_path / "pin.toml"
    config.write_text(CONFIG)
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    with Store.for_output_dir(tmp_path / "out") as store:
        rows = {r["candidate_name"]: r for r in store.measurements(store.latest_run_id())}
    pins = json.loads(PINS.read_text())
    assert sorted(rows) == sorted(pins)
    for name, pinned in pins.items():
        row, extra = rows[name], rows[name].get("extra") or {}
        measured = {key: row.get(key, extra.get(key)) for key in pinned}
        assert measured == pinned, name
