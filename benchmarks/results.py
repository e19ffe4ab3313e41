"""Shared by the benchmarks: the machine's name and writing one section of RESULTS.md in place."""
from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_name() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        found = re.search(r"Model name:\s*(.+)", out)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{os.cpu_count()}-core CPU ({cpu}), {gpu}"


def write_section(title: str, body: str) -> None:
    """Replace (or append) the `## title` section of RESULTS.md, keeping every other section."""
    from competition.io.files import write_text

    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    write_text(RESULTS, text)


def publish(title: str, body: str, print_only: bool) -> None:
    """Print the section (print_only: a partial or trial run), else write it into RESULTS.md."""
    if print_only:
        print(body)
    else:
        write_section(title, body)
        print(f"wrote section '{title}' of benchmarks/RESULTS.md")
