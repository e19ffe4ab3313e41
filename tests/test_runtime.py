"""The CLIs keep freed memory mapped: large CPU buffers are not page-faulted in again every step."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import resource, sys, torch
    from competition.core.runtime import keep_freed_memory
    made = keep_freed_memory() if sys.argv[1] == "on" else False
    def step():  # two large activation-like buffers, used and freed, as a training step does
        a = torch.empty(16 * 2**20).fill_(1.0)
        b = torch.empty(8 * 2**20).fill_(2.0)
        del a, b
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(30):
        step()
    print(made, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    made, faults = out.stdout.split()
    return made, int(faults)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings exist on Linux only")
def test_large_buffers_are_reused_instead_of_faulted_in_each_time():
    made, kept = _faults("on")
    _, default = _faults("off")
    assert made == "True"
    # 30 steps × 96 MiB is about 740,000 fresh 4 KiB pages when each buffer is unmapped on free
    assert default > 300_000
    assert kept < default / 5, (kept, default)


def test_a_users_own_malloc_setting_wins(monkeypatch):
    from competition.core.runtime import keep_freed_memory

    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    assert keep_freed_memory() is False
