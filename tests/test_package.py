"""`python -m competition.package`: the folder a Kaggle code competition runs from. Its predict.py,
in a fresh environment that has the kit's dependencies but not the kit, without network and
with the folder read-only (as Kaggle mounts datasets), writes the submission predict writes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import image_config, make_image_competition, no_network_reason, table_config, write_yaml

from competition import package, predict, train


def _ids_that_look_like_numbers(root: Path) -> None:
    """r000, r001, … → 0000, 0001, …: ids a reader of numbers would turn into 0, 1, …"""
    for name in ("train.csv", "test.csv", "sample_submission.csv", "solution.csv"):
        lines = (root / name).read_text().splitlines()
        (root / name).write_text("\n".join([lines[0], *("0" + line[1:] for line in lines[1:])]) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One tiny image competition (ids 0000, 0001, …), 2 folds (a head-only epoch, then one of every
    layer), and the submission predict writes for it."""
    tmp = tmp_path_factory.mktemp("trained")
    root = make_image_competition(tmp / "data" / "shapes")
    _ids_that_look_like_numbers(root)
    cfg = write_yaml(tmp / "shapes.yaml", image_config(tmp, root))
    assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    reference = tmp / "reference.csv"
    assert predict.main(["--config", str(cfg), "--output", str(reference)]) == 0
    return {"config": cfg, "root": root, "reference": reference, "outputs": tmp / "outputs"}


def _kaggle_like_venv(path: Path) -> Path:
    """A fresh virtualenv that sees this environment's packages as preinstalled (Kaggle's image has
    torch, timm, …) but not the kit: a view of site-packages without the kit's files, its
    editable-install finder and .pth files, listed in the new venv's own .pth. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    view = path / "preinstalled"
    view.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("competition", "__editable__")) and entry.suffix != ".pth":
            (view / entry.name).symlink_to(entry)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "preinstalled.pth").write_text(f"{view}\n")
    return python


def _offline_readonly(readonly: Path) -> list[str]:
    """A command prefix: no network route, `readonly` mounted read-only (as /kaggle/input is),
    where this machine allows it; else no network only; else nothing."""
    wrapper = ["unshare", "-n", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
               str(readonly)]
    if no_network_reason() is not None:
        return []
    if subprocess.run([*wrapper, "true"], capture_output=True).returncode == 0:
        return wrapper
    return ["unshare", "-n"]


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.slow
def test_packaged_predict_runs_offline_in_a_fresh_environment(trained, tmp_path):
    pkg = tmp_path / "pkg"
    assert package.main(["--config", str(trained["config"]), "--output", str(pkg)]) == 0
    wheels = list(pkg.glob("competition-*-py3-none-any.whl"))
    assert len(wheels) == 1
    # The folds, and the full predict's cv.json (thresholds for predict --no-cv, which the package runs).
    assert sorted(p.name for p in (pkg / "outputs" / "shapes").iterdir()) == ["cv.json", "fold0", "fold1"]
    assert yaml.safe_load((pkg / "config.yaml").read_text())["output_dir"] == "outputs"
    before = _listing(pkg)

    python = _kaggle_like_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1")
    working = tmp_path / "working"
    working.mkdir()
    (working / "competition").mkdir()  # a folder of that name where the notebook runs must not matter
    out = working / "submission.csv"
    run = subprocess.run([*_offline_readonly(pkg), str(python), str(pkg / "predict.py"), "--data", str(trained["root"]),
                          "--output", str(out)], cwd=working, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "CV accuracy" in run.stdout

    # The kit that ran is the wheel, installed into the new environment.
    where = subprocess.run([str(python), "-c", "import competition; print(competition.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv" / "lib"), where
    assert out.read_bytes() == trained["reference"].read_bytes()
    ids = [line.split(",")[0] for line in out.read_text().splitlines()]
    assert ids == [line.split(",")[0] for line in (trained["root"] / "sample_submission.csv").read_text().splitlines()]
    assert ids[1].startswith("00")  # the ids as the sample spells them, not as numbers
    assert _listing(pkg) == before  # nothing written into the (read-only on Kaggle) package


def test_a_table_package_carries_its_feature_hook(table_comp, tmp_path):
    """The hook lands at the same path beside the packaged config, and the package predicts
    alone: from its own folder, with the original hook and outputs gone."""
    cfg_path, root = table_comp
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "feats.py").write_text(
        "import pandas as pd\n\n\nclass Feats:\n"
        "    def fit(self, rows):\n        return {'mid': float(rows['x1'].median())}\n\n"
        "    def transform(self, rows, state):\n"
        "        return pd.DataFrame({'high': rows['x1'] > state['mid'], 'x1': rows['x1'], 'color': rows['color']})\n"
    )
    cfg = write_yaml(cfg_path, {**yaml.safe_load(cfg_path.read_text()), "data": {
        **yaml.safe_load(cfg_path.read_text())["data"], "features": "hooks/feats.py:Feats"}})
    assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    reference = tmp_path / "reference.csv"
    assert predict.main(["--config", str(cfg), "--output", str(reference)]) == 0

    pkg = tmp_path / "pkg"
    assert package.main(["--config", str(cfg), "--output", str(pkg)]) == 0
    assert yaml.safe_load((pkg / "config.yaml").read_text())["data"]["features"] == "hooks/feats.py:Feats"
    for k in (0, 1):  # predict needs the weights, not what --resume continues from
        shipped, trained = (folder / "table" / f"fold{k}" / "best.pt" for folder in (pkg / "outputs", tmp_path / "outputs"))
        assert shipped.stat().st_size < trained.stat().st_size
        state = torch.load(shipped, weights_only=True)
        assert torch.load(trained, weights_only=True)["optimizer_state_dict"]["state"]  # the run's has AdamW's moments
        assert (state["optimizer_state_dict"], state["scaler_state_dict"], state["train_state_dict"]) == ({}, None, None)
    shutil.rmtree(hooks)
    shutil.rmtree(tmp_path / "outputs")
    os.chdir(pkg)  # the packaged config's output_dir is relative to the package
    out = tmp_path / "packaged.csv"
    assert predict.main(["--config", "config.yaml", "--set", f"data.root={root}", "--output", str(out)]) == 0
    assert pd.read_csv(out).equals(pd.read_csv(reference))


def _refused(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err, err
    assert all(n in err for n in needles), err
    return err


def test_refusals_are_one_line_and_write_nothing(trained, tmp_path, capsys):
    cfg = str(trained["config"])
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    _refused(capsys, package.main(["--config", cfg, "--output", str(full)]), str(full), "not an empty folder")
    assert [p.name for p in full.iterdir()] == ["notes.txt"]

    untrained = write_yaml(tmp_path / "untrained.yaml", image_config(tmp_path, trained["root"]))
    _refused(capsys, package.main(["--config", str(untrained), "--output", str(tmp_path / "a")]), "no trained folds")

    broken = tmp_path / "copy"
    shutil.copytree(trained["outputs"], broken)
    (broken / "shapes" / "fold1" / "best.pt").write_bytes(b"not a checkpoint")
    _refused(capsys, package.main(["--config", cfg, "--set", f"output_dir={broken}", "--output", str(tmp_path / "b")]),
             str(broken / "shapes" / "fold1" / "best.pt"))

    hook = tmp_path / "feats.py"
    hook.write_text("class F:\n    pass\n")
    tables = write_yaml(tmp_path / "t.yaml", table_config(tmp_path, tmp_path, data={"features": f"{hook}:F"}))
    _refused(capsys, package.main(["--config", str(tables), "--output", str(tmp_path / "c")]),
             "data.features", "outside the config's folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "feats.py", "full", "t.yaml", "untrained.yaml"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root; CI runs as root")
def test_a_full_disk_leaves_nothing(trained, tmp_path, capsys):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        rc = package.main(["--config", str(trained["config"]), "--output", str(small / "kaggle" / "pkg")])
        _refused(capsys, rc, str(small / "kaggle" / "pkg"), "no space left on device", "needs", "free on")
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
