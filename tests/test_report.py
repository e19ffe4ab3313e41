"""report.html, written by predict: one self-contained page that headless Chromium renders without
a console message into a screenshot that is not blank; and its figures, measured as drawn."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from competition import predict, train
from competition.core.metrics import decide
from competition.inference.gradcam import Panels, panels_figure, pick_rows
from competition.inference.report import curves_figure
from competition.io.tracking import confusion_figure, mistakes_figure, per_class_f1_figure, worst_mistakes

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


# The figures, unit by unit: what a reader of the report sees, measured on the drawn figure.

REPORT_WIDTH = 1100 - 2 * 15  # report.STYLE: a page at most 1100 px wide, padded 1em (15 px) a side
PLANET = ["agriculture", "artisinal_mine", "bare_ground", "blooming", "blow_down", "clear", "cloudy",
          "conventional_mine", "cultivation", "habitation", "haze", "partly_cloudy", "primary", "road",
          "selective_logging", "slash_burn", "water"]


def history(epochs: int, seed: int = 0) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    noise = np.random.default_rng(seed).random(epochs) * 0.1
    return pd.DataFrame({"epoch": e, "stage": 2, "train_loss": 2 / e + noise, "val_loss": 2.2 / e + noise,
                         "metric": 1 - 0.8 / e})


def coloured_pixels(fig, ax) -> int:
    """Pixels of `ax`'s data area (legend taken out) that are neither grey nor white: the plotted data."""
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    fig.canvas.draw()
    box = ax.get_window_extent()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    height = rgb.shape[0]
    area = rgb[int(height - box.y1) + 2:int(height - box.y0) - 2, int(box.x0) + 2:int(box.x1) - 2]
    return int(((area.max(-1) - area.min(-1)) > 60).sum())


def test_one_epoch_learning_curves_show_their_points_on_sensible_axes():
    fig = curves_figure({0: history(1), 1: history(1, seed=1)}, "accuracy")
    loss_ax, metric_ax = fig.axes
    assert [t for t in loss_ax.get_xticks() if loss_ax.get_xlim()[0] <= t <= loss_ax.get_xlim()[1]] == [1]
    assert metric_ax.get_xlim() == (0.5, 1.5)
    assert metric_ax.get_ylim() == (-0.02, 1.02)  # accuracy scores in [0, 1]: that is its axis
    bottom, top = loss_ax.get_ylim()
    assert bottom == 0 and top >= 2.2
    assert coloured_pixels(fig, loss_ax) > 20 and coloured_pixels(fig, metric_ax) > 20  # the points are drawn
    plt.close(fig)


def test_a_loss_metric_is_drawn_from_zero_over_many_epochs():
    h = history(8).assign(metric=lambda d: d["val_loss"])
    fig = curves_figure({0: h}, "log_loss")
    _, metric_ax = fig.axes
    assert metric_ax.get_xlim() == (0.5, 8.5)
    bottom, top = metric_ax.get_ylim()
    assert bottom == 0 and h["metric"].max() <= top < 1.2 * h["metric"].max()
    plt.close(fig)


def overlapping(fig, labels) -> list[tuple[str, str]]:
    """Pairs of tick labels whose drawn boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels if t.get_text()]
    return [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:] if box.overlaps(other)]


@pytest.mark.parametrize("classes", [["healthy", "multiple_diseases", "rust", "scab"], PLANET])
def test_per_class_f1_names_never_overlap(classes):
    rng = np.random.default_rng(0)
    y = (rng.random((200, len(classes))) < 0.3).astype(int)
    fig = per_class_f1_figure(y, (rng.random(y.shape) < 0.3).astype(int), classes)
    (ax,) = fig.axes
    labels = ax.get_yticklabels()
    assert [t.get_text() for t in labels] == [f"{c} ({n})" for c, n in zip(classes, y.sum(0), strict=True)]
    assert overlapping(fig, labels) == []
    plt.close(fig)


@pytest.mark.parametrize("classes", [["Cassava Bacterial Blight (CBB)", "Cassava Brown Streak Disease (CBSD)",
                                      "Cassava Green Mottle (CGM)", "Cassava Mosaic Disease (CMD)", "Healthy"],
                                     [f"species_{i:03d}" for i in range(60)]])
def test_confusion_matrix_names_never_overlap(classes):
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(classes), 500)
    fig = confusion_figure(y, rng.integers(0, len(classes), 500), classes)
    (ax,) = fig.axes
    assert overlapping(fig, ax.get_xticklabels()) == [] and overlapping(fig, ax.get_yticklabels()) == []
    plt.close(fig)


def test_mistake_captions_say_whose_probability_they_show():
    classes = ["haze", "road", "water"]
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]])
    probs = np.array([[0.8, 0.3, 0.91], [0.9, 0.1, 0.2], [0.2, 0.7, 0.6]])
    wrong, focus, captions = worst_mistakes(y, probs, decide(probs, True), classes, True, 5)
    # Row 0 lacks water at p=0.91 and has road at p=0.30: water is the class furthest from its answer.
    assert list(wrong) == [0] and focus == [2]
    assert captions == ["true haze road\npred haze water\np(water)=0.91"]
    single = np.array([[0.1, 0.87, 0.03], [0.6, 0.3, 0.1]])
    wrong, focus, captions = worst_mistakes(np.array([0, 0]), single, decide(single, False), classes, False, 5)
    assert list(wrong) == [0] and captions == ["true haze\npred road (p=0.87)"]
    # Grad-CAM's right answers: the surest class, whose map is drawn, with its probability.
    right = pick_rows(y, probs, classes, True, 4, seed=0)["correct"]
    assert list(right[0]) == [1, 2] and right[1] == [0, 1]
    assert right[2] == ["haze\np(haze)=0.90", "road water\np(road)=0.70"]


def caption_line_px(fig, texts) -> float:
    """The smallest caption line height, in pixels as report.html shows the figure (scaled to the page)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    shown = min(1.0, REPORT_WIDTH / fig.canvas.get_width_height()[0])
    return min(t.get_window_extent(renderer).height / (t.get_text().count("\n") + 1) for t in texts) * shown


def test_captions_are_readable_where_the_report_shows_them():
    rng = np.random.default_rng(0)
    images = rng.random((8, 32, 32, 3))
    panels = Panels("mistakes", images, rng.random((8, 32, 32)), "layer2",
                    [f"img_{i:04d}: true {PLANET[i]}\npred {PLANET[-i]}\np(water)=0.91" for i in range(8)])
    grid = panels_figure(panels)
    titles = [ax.title for ax in grid.axes if ax.title.get_text()] + [ax._left_title for ax in grid.axes
                                                                        if ax._left_title.get_text()]
    assert len(titles) == 8 and caption_line_px(grid, titles) >= 12
    mistakes = mistakes_figure(list(images) + list(images[:4]), ["true 3\npred 8 (p=0.87)"] * 12)  # the report shows 12
    assert caption_line_px(mistakes, [ax.title for ax in mistakes.axes if ax.title.get_text()]) >= 12
    plt.close("all")
