"""Kill-and-resume on the digits demo: fold 0 trained once without interruption, and once
killed with SIGKILL right after its second epoch and resumed with --resume. The two must end
with the same best epoch, the same metric and bit-identical best weights (CPU).

    python benchmarks/resume_digits.py [--kill-after 2] [--set train.num_workers=2 ...]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results import machine_name, write_section  # noqa: E402

from competition.data.demos import build_digits  # noqa: E402


def _train(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "competition.train", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-after", type=int, default=2, help="kill once last.pt holds this epoch")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_digits(tmp / "digits")
        sets = [x for o in args.overrides for x in ("--set", o)]
        common = ["--config", "digits", "--fold", "0", "--set", f"data.root={tmp / 'digits'}", *sets]
        start = time.time()
        assert _train([*common, "--set", f"output_dir={tmp / 'ref'}"]).wait() == 0
        ref_seconds = time.time() - start

        out = ["--set", f"output_dir={tmp / 'run'}"]
        last = tmp / "run" / "digits" / "fold0" / "last.pt"
        proc = _train([*common, *out])
        while _epoch(last) < args.kill_after and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = _epoch(last)
        assert _train([*common, *out, "--resume"]).wait() == 0

        ref = torch.load(tmp / "ref" / "digits" / "fold0" / "best.pt", weights_only=True)
        got = torch.load(tmp / "run" / "digits" / "fold0" / "best.pt", weights_only=True)
        same = all(torch.equal(v, got["model_state_dict"][k]) for k, v in ref["model_state_dict"].items())
    verdict = "identical" if same and (ref["epoch"], ref["metric"]) == (got["epoch"], got["metric"]) else "DIFFERENT"
    rows = [
        "| run | best epoch | best accuracy |",
        "|---|---|---|",
        f"| uninterrupted ({ref_seconds:.0f} s) | {ref['epoch']} | {ref['metric']:.5f} |",
        f"| SIGKILL after epoch {killed_at}, then `--resume` | {got['epoch']} | {got['metric']:.5f} |",
    ]
    body = (f"Machine: {machine_name()}. Command: `python benchmarks/resume_digits.py "
            f"--kill-after {args.kill_after}{''.join(' --set ' + o for o in args.overrides)}`. "
            f"Digits demo, fold 0, shipped config.\n\n" + "\n".join(rows) +
            f"\n\nBest weights: **{verdict}** ({len(ref['model_state_dict'])} tensors compared bit for bit).")
    print(body)
    write_section("Kill and resume (digits)", body)
    if verdict != "identical":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
