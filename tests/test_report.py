"""report.html, written by predict: one self-contained page that headless Chromium renders without
a console message into a screenshot that is not blank."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from competition import predict, train

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium: `make browser` installs it (as root)")


def render(page: Path, shot: Path) -> list[str]:
    """Screenshot `page` in headless Chromium; its console messages (log, errors, uncaught
    exceptions), which Chromium's log reports as CONSOLE lines."""
    done = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", "--window-size=1200,2400", f"--screenshot={shot}",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr
    return [line for line in done.stderr.splitlines() if "CONSOLE" in line]


def drawn_fraction(shot: Path) -> float:
    """The share of the screenshot's pixels that differ from its background (the corner pixel)."""
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    return float((np.abs(pixels - pixels[0, 0]).sum(-1) > 30).mean())


@pytest.mark.slow
@needs_browser
def test_the_check_sees_console_errors_and_a_blank_page(tmp_path):
    """The two checks below can fail: a page with a console error and an uncaught exception is
    caught, and an empty page reads as blank."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><script>console.error("boom"); missing();</script></body></html>')
    messages = render(bad, tmp_path / "bad.png")
    assert any('"boom"' in m for m in messages) and any("missing is not defined" in m for m in messages)
    assert drawn_fraction(tmp_path / "bad.png") < 0.001


@pytest.mark.slow
@needs_browser
def test_predict_writes_a_report_that_renders(trained_image_comp, tmp_path, capsys):
    cfg, _ = trained_image_comp
    assert predict.main(["--config", str(cfg)]) == 0
    report = tmp_path / "outputs" / "shapes" / "report.html"
    assert f"report: {report}" in capsys.readouterr().out
    page = report.read_text()
    # Self-contained: every image inline, no link to another file or to the network.
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:") for s in sources)
    for text in ("fold 0", "fold 1", "as submitted", "Local leaderboard accuracy", "Learning curves",
                 "Confusion matrix", "Per-class precision and recall", "Grad-CAM", "name: shapes"):
        assert text in page, text
    assert page.count("data:image/png;base64,") >= 6  # curves, confusion, mistakes, Grad-CAM of each fold
    shot = tmp_path / "report.png"
    assert render(report, shot) == []
    assert drawn_fraction(shot) > 0.05


def test_a_table_report_says_why_it_has_no_grad_cam(table_comp, tmp_path):
    cfg, _ = table_comp
    assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    assert predict.main(["--config", str(cfg), "--output", str(tmp_path / "sub.csv")]) == 0
    page = (tmp_path / "outputs" / "table" / "report.html").read_text()
    assert "reads table features, which have no spatial feature map" in page
    assert "Per-class precision and recall" in page and "<h2>Mistakes</h2>" not in page


def test_no_report_from_a_submission_only_predict(trained_image_comp, tmp_path):
    cfg, _ = trained_image_comp
    assert predict.main(["--config", str(cfg), "--folds", "0", "--no-cv", "--output", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").is_file() and not (tmp_path / "outputs" / "shapes" / "report.html").exists()
