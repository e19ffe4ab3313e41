"""`python -m competition.auto`: a portfolio, then an Optuna search, every trial a normal run, all
within the time budget; a failed trial recorded and skipped; Ctrl-C, then --resume finishing the
study while a second process shares it; and the blend of the finished trials as the checked submission.

The table scenario runs once for the module (two auto runs in this process, one beside it in another)
and the tests read what it left; budgets are seconds, so the whole file stays around a minute."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import image_config, make_image_competition, make_table_competition, table_config, write_yaml

from competition import auto
from competition.config import load_config
from competition.core import interrupts
from competition.core.choices import TASK_KINDS
from competition.core.schema import build_config, config_to_dict
from competition.io.runs import RunRecord, config_digest
from competition.search.recipes import SEARCHES, TABLE_MODELS, choose, config_sets, portfolio_params, recipes
from competition.search.search_page import WAYS
from competition.search.study import _yaml

REPO = Path(__file__).resolve().parents[1]
SLACK = 1.05  # training, predict and blend end within 5% of the budget


def _run(argv: list[str]) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    began = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = auto.main(argv)
    return code, out.getvalue(), err.getvalue(), time.monotonic() - began


def _leftover_run(run_dir: Path, cfg: dict) -> None:
    """A run of another config under the name auto's trial 0 takes: train refuses it in one line."""
    config = config_to_dict(build_config({**cfg, "seed": 99, "name": run_dir.name}))
    RunRecord(run_dir.name, config, config_digest(config), "0123456789ab", ["0", "1"], "2026-01-01T00:00:00Z").write(run_dir)


@pytest.fixture(scope="module")
def table_study(tmp_path_factory: pytest.TempPathFactory, zygote) -> dict:
    base = tmp_path_factory.mktemp("auto-table")
    raw = table_config(base, make_table_competition(base / "data" / "table"), auto={"models": ["lightgbm", "logreg", "mlp"]})
    cfg = str(write_yaml(base / "table.yaml", raw))
    _leftover_run(base / "outputs" / "table-t000-lightgbm", raw)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        # Ctrl-C during fold 0 of the first MLP trial (after its 3rd optimizer step; core.interrupts.TEST_FAULT).
        mp.setattr(interrupts, "TEST_FAULT", (3, signal.SIGINT))
        first = _run(["--config", cfg, "--time-budget", "60s"])
        mp.setattr(interrupts, "TEST_FAULT", None)
        # Another process joins the study (the default SQLite file), then this one continues it with --resume.
        began = time.monotonic()
        other = zygote.spawn(["competition.auto", "--config", cfg, "--time-budget", "60s", "--trials", "2"], cwd=base)
        header = other.stdout.readline()  # it has joined the study and is about to start its first trial
        resumed = _run(["--config", cfg, "--resume", "--time-budget", "20s"])
        out, err = other.communicate(timeout=120)
        joined = (other.returncode, header + out, err, time.monotonic() - began)
    for s, handler in previous.items():
        signal.signal(s, handler)
    study = optuna.load_study(study_name="table", storage=f"sqlite:///{base / 'outputs' / 'auto' / 'table' / 'study.db'}")
    return {"base": base, "cfg": cfg, "first": first, "resumed": resumed, "joined": joined, "study": study,
            "trials": {t.number: t for t in study.get_trials()}}


@pytest.mark.slow
def test_ctrl_c_stops_the_study_in_one_line_and_a_failed_trial_is_recorded_and_skipped(table_study):
    code, out, err, _ = table_study["first"]
    assert code == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted (SIGINT): trial 2 (table-t002-mlp) stopped") and "Traceback" not in err, err
    assert line.endswith(f"continue with: python -m competition.auto --config {table_study['cfg']} --resume"), line
    trials = table_study["trials"]
    # The leftover run under trial 0's name: its one line, in the progress and in the study; the search went on.
    failed = trials[0].user_attrs
    assert trials[0].state.name == "FAIL" and failed["error"].startswith("error: ")
    assert "table-t000-lightgbm/run.json was trained with model.name" in failed["error"]
    assert "trial 0 lightgbm (learning_rate 0.05, num_leaves 31" in out and failed["error"] in out
    assert trials[1].state.name == "COMPLETE" and trials[1].params["recipe"] == "logreg"
    assert trials[2].user_attrs["outcome"] == "interrupted" and "trial 2 mlp" in out


@pytest.mark.slow
def test_resume_continues_the_stopped_trial_while_another_process_shares_the_study(table_study):
    for code, _, err, _ in (table_study["resumed"], table_study["joined"]):
        assert code == 0, err
    trials = table_study["trials"]
    continued = [t for t in trials.values() if t.user_attrs.get("continues") == 2]
    assert len(continued) == 1 and continued[0].state.name == "COMPLETE", continued
    assert continued[0].user_attrs["run"] == "table-t002-mlp" and continued[0].params == trials[2].params
    # Each trial ran in one process only: one run per trial (a continuation takes up its trial's run).
    runs = [t.user_attrs["run"] for t in trials.values() if "run" in t.user_attrs and "continues" not in t.user_attrs]
    assert len(runs) == len(set(runs)) and len(trials) > 4
    by_pid: dict[int, list] = {}
    for t in trials.values():
        if "pid" in t.user_attrs and t.datetime_complete is not None:
            by_pid.setdefault(t.user_attrs["pid"], []).append((t.datetime_start, t.datetime_complete))
    assert len(by_pid) == 2
    here, there = by_pid.pop(os.getpid()), next(iter(by_pid.values()))
    assert any(a < d and c < b for a, b in here for c, d in there), "no trials of the two processes at the same time"
    assert f"trial {continued[0].number} mlp" in table_study["resumed"][1] + table_study["joined"][1]
    # The budget: this process's work ends within 5% of it; the other's, started beside it, too.
    assert table_study["resumed"][3] <= SLACK * 20
    assert table_study["joined"][3] <= SLACK * 60 + 3  # + its interpreter's start


@pytest.mark.slow
def test_the_finished_trials_blend_into_a_checked_submission_with_honest_numbers(table_study):
    base = table_study["base"]
    summary = json.loads((base / "outputs" / "auto" / "table" / "summary.json").read_text())
    sub, sample = pd.read_csv(summary["submission"]), pd.read_csv(base / "data" / "table" / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and list(sub["key"]) == list(sample["key"])
    assert set(sub["target"]) <= {0, 1}
    best = max((t for t in table_study["trials"].values() if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert summary["best"]["cv"] == pytest.approx(best.value)
    # The submitted way is the one that scores higher on rows it was not chosen on; only trials with
    # every fold trained and predicted are blended.
    choice = summary["choice"]
    assert choice["scores"][choice["chosen"]] == max(choice["scores"].values())  # (ties: the lower log loss)
    assert choice["submitted"] == choice["chosen"]
    assert summary["estimate"] == choice["scores"][choice["submitted"]]
    blends = base / "outputs" / "blends" / "table-auto" / "blend.json"
    if choice["submitted"] in ("blend", "portfolio"):
        for run in json.loads(blends.read_text())["runs"]:
            assert all((base / "outputs" / run / f"fold{k}" / "best.pt").is_file() for k in (0, 1))
    else:  # (blend.json may be the other process's: each ends with its own choice)
        alone = base / "outputs" / "auto" / "table" / "submissions" / f"{summary['best']['run']}.csv"
        assert sub.equals(pd.read_csv(alone))
    sel = summary["selection"]
    assert 0 <= sel["other_rows"] <= 1 and sel["drop"] == pytest.approx(sel["same_rows"] - sel["other_rows"])
    assert sel["same_rows"] == pytest.approx(best.value) and sel["other_rows"] == choice["scores"]["best"]
    out = table_study["resumed"][1] + table_study["joined"][1]
    assert "flatters the best CV by" in out and f"submitted: {WAYS[choice['chosen']]}" in out and "submission:" in out
    page = (base / "outputs" / "auto" / "table" / "report.html").read_text()
    assert "table-t000-lightgbm/run.json was trained with model.name" in page and "estimate" in page
    # Every trial is a run of its own on the board; trials predict without report.html (auto's page links runs).
    for t in table_study["trials"].values():
        if t.user_attrs.get("outcome") == "complete":
            assert t.user_attrs["run"] in out and not (base / "outputs" / t.user_attrs["run"] / "report.html").exists()


def test_every_recipe_and_every_knob_setting_is_a_config_the_kit_accepts(tmp_path):
    """The portfolio and a random sample of the search space of every recipe pass the config's checks
    (TPE only ever proposes points of the same space): tables, and images from scratch, from timm's
    weights and from a local file."""
    table = write_yaml(tmp_path / "t.yaml", table_config(tmp_path, tmp_path / "t"))
    image = write_yaml(tmp_path / "i.yaml", image_config(tmp_path, tmp_path / "i", auto={"backbones": {
        "test_resnet": None, "test_efficientnet": "timm", "test_vit": str(tmp_path / "w.safetensors")}}))
    # (write_yaml sorts the backbones; a config file keeps its own order)
    for path, names in ((table, TABLE_MODELS), (image, ("test_efficientnet", "test_resnet", "test_vit"))):
        found = recipes(load_config(str(path)))
        assert tuple(found) == names
        for recipe in found.values():
            portfolio = {k.split(":", 1)[1]: v for k, v in portfolio_params(recipe).items() if ":" in k}
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
            sampled = []
            for _ in range(8):
                trial = study.ask()
                sampled.append(choose(recipe, trial))
                study.tell(trial, 0.0)
            for values in (portfolio, *sampled):
                sets = [f"{k}={_yaml(v)}" for k, v in config_sets(recipe, values).items()]
                assert load_config(str(path), sets).model.name == recipe.sets["model.name"], (recipe.name, values)
    assert list(SEARCHES) == list(TASK_KINDS)  # each task kind searches something
    found = recipes(load_config(str(image)))
    assert (found["test_resnet"].sets["train.freeze_epochs"], found["test_resnet"].sets["model.pretrained"]) == (0, False)
    assert found["test_efficientnet"].sets["model.pretrained"] is True
    assert found["test_vit"].sets["model.pretrained_file"] == str(tmp_path / "w.safetensors")


@pytest.mark.slow
def test_auto_on_images_trains_a_backbone_from_scratch_and_writes_the_checked_submission(tmp_path, capsys):
    root = make_image_competition(tmp_path / "data" / "shapes")
    cfg = write_yaml(tmp_path / "shapes.yaml", image_config(
        tmp_path, root, auto={"backbones": {"test_resnet": None}}, predict={"tta": [], "batch_size": 16},
        train={"epochs": 1, "freeze_epochs": 0, "batch_size": 8, "lr": 3e-3, "num_workers": 0, "patience": 0,
               "warmup_epochs": 0, "cache": "off"}))
    began = time.monotonic()
    code = auto.main(["--config", str(cfg), "--time-budget", "60s", "--trials", "1", "--output",
                      str(tmp_path / "auto.csv")])
    seconds = time.monotonic() - began
    out = capsys.readouterr().out
    assert code == 0 and seconds <= SLACK * 60, (seconds, out)
    assert "trial 0 test_resnet (epochs 1" in out and "trial 1 " not in out and "submission: " in out
    sub, sample = pd.read_csv(tmp_path / "auto.csv"), pd.read_csv(root / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and list(sub["id"]) == list(sample["id"])
    assert set(sub["label"]) <= {"circle", "cross", "square"}
    trial0 = load_config(str(tmp_path / "outputs" / "shapes-t000-test_resnet" / "config.yaml"))
    assert (trial0.model.name, trial0.model.pretrained, trial0.train.freeze_epochs) == ("test_resnet", False, 0)
    summary = json.loads((tmp_path / "outputs" / "auto" / "shapes" / "summary.json").read_text())
    assert summary["seconds"] <= SLACK * 60 and np.isfinite(summary["estimate"]) and summary["trials"] == {"complete": 1}


def test_a_setting_already_tried_is_not_trained_again_and_counts_as_repeated(capsys):
    from types import SimpleNamespace

    from competition.search.loop import repeated
    from competition.search.outcome import counts

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    space = {"recipe": optuna.distributions.CategoricalDistribution(["logreg"]),
             "model.params.C": optuna.distributions.FloatDistribution(1e-3, 100.0, log=True)}
    search = SimpleNamespace(study=study)
    first = study.ask(space)
    first.set_user_attr("run", "t-t000-logreg")
    study.tell(first, 0.8)
    study.enqueue_trial(first.params)
    again = study.ask(space)
    assert repeated(search, again)
    assert study.trials[again.number].value == 0.8 and "run" not in study.trials[again.number].user_attrs
    assert "the settings of trial 0, not trained again" in capsys.readouterr().out
    study.enqueue_trial({"recipe": "logreg", "model.params.C": 2.0})
    other = study.ask(space)
    assert not repeated(search, other)
    other.set_user_attr("run", "t-t002-logreg")
    study.tell(other, 0.7)
    assert counts(search) == {"complete": 2, "repeated": 1}
