"""How long each command takes to start: `python -m competition.<command> --help` for every command,
and `board` on an empty output folder, each a fresh interpreter timed whole. The kit in this
checkout ("after") is timed against an earlier commit of it ("before", exported with `git archive`),
the two alternated round by round so that both see the same load; medians reported. Results go
to benchmarks/RESULTS.md.

    python benchmarks/startup.py [--before 3f0b292] [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results import machine_name, write_section  # noqa: E402

TITLE = "Start-up: --help and an empty board"
COMMANDS = ("train", "predict", "explain", "board", "blend", "folds", "import_folders", "package", "auto")
HEAVY = ("torch", "timm", "albumentations", "cv2", "sklearn", "matplotlib", "pandas")
# Which of HEAVY a command's run loaded: the command as `python -m` runs it, then sys.modules.
PROBE = """
import contextlib, io, json, runpy, sys
module, argv, heavy = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
sys.argv = [module, *argv]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        runpy.run_module(module, run_name="__main__")
    except SystemExit:
        pass
print(json.dumps([m for m in heavy if m in sys.modules]))
"""


def export(commit: str, dest: Path) -> Path:
    """The package as it was at `commit`, in `dest` (nothing in the checkout changes)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "competition"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def cases(empty: Path) -> dict[str, list[str]]:
    runs = {f"{c} --help": [f"competition.{c}", "--help"] for c in COMMANDS}
    runs["board (empty output dir)"] = ["competition.board", "--set", f"output_dir={empty}"]
    return runs


def timed(code: Path, args: list[str], cwd: Path) -> float:
    """Seconds from starting the interpreter to its exit; the code comes from `code` (PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def loaded(code: Path, args: list[str], cwd: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, "-c", PROBE, args[0], json.dumps(args[1:]), json.dumps(HEAVY)], cwd=cwd,
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="3f0b292", help="the commit to compare with (default 3f0b292, before issue 21)")
    p.add_argument("--repeats", type=int, default=7, help="runs of each case and side; medians reported")
    p.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        tmp = Path(tmp)
        cwd, empty = tmp / "cwd", tmp / "empty-outputs"
        cwd.mkdir()
        empty.mkdir()
        sides = {"before": export(a.before, Path(tempfile.mkdtemp(dir=tmp))), "after": REPO}
        runs = cases(empty)
        load_start = os.getloadavg()
        times: dict[tuple[str, str], list[float]] = {}
        python = [timed(REPO, ["json.tool", "--help"], cwd) for _ in range(a.repeats)]  # the interpreter alone
        for _ in range(a.repeats):  # round by round, both sides: they share whatever else the machine runs
            for name, args in runs.items():
                for side, code in sides.items():
                    times.setdefault((name, side), []).append(timed(code, args, cwd))
        heavy = {(name, side): loaded(code, args, cwd) for name, args in runs.items() for side, code in sides.items()}
        load_end = os.getloadavg()

    rows = []
    for name in runs:
        before, after = (statistics.median(times[(name, s)]) for s in ("before", "after"))
        rows.append(f"| `{name}` | {before:.2f} | {after:.2f} | {before / after:.1f}× | "
                    f"{', '.join(heavy[(name, 'before')]) or '-'} | {', '.join(heavy[(name, 'after')]) or '-'} |")
    body = f"""Machine: {machine_name()}, shared with other work while it ran (load average {load_start[0]:.1f} at the
start, {load_end[0]:.1f} at the end, on {os.cpu_count()} cores): the absolute seconds are slower than on an idle
machine, the two sides saw the same load. Command: `python benchmarks/startup.py --before {a.before} --repeats {a.repeats}`.

Each case is a fresh `python -m …` timed whole (start to exit), medians of {a.repeats} runs; the sides alternate
run by run. 'before' is the kit at commit {a.before} (`git archive`), 'after' this checkout. `board (empty output
dir)` runs the default config with an empty `output_dir`. The interpreter alone (`python -m json.tool --help`)
takes {statistics.median(python):.2f} s here. The last columns list which of {', '.join(HEAVY)} each run loaded.

| case | before s | after s | speed-up | loaded before | loaded after |
|---|---|---|---|---|---|
""" + "\n".join(rows)
    print(body)
    if not a.no_write:
        write_section(TITLE, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
