"""output_dir/auto/<name>/report.html: an auto run on one page — the submission, the honest numbers
beside the flattering ones, and every trial of the study (recipe, knobs, CV, time, what stopped it),
linked to each trial's run. Plain HTML, no script, readable offline."""
from __future__ import annotations

import datetime as dt
import html
import os
from pathlib import Path

from competition.core.durations import format_duration
from competition.io.files import write_text

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;font-size:90%}"
         "tr.complete td:nth-child(5){font-weight:bold}.muted{color:#777}")


def _cell(value) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _knobs(params: dict) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in params.items() if k != "recipe")


def outcome(t) -> str:
    """A trial's outcome as summary.json counts it: "repeated" for a repeat of a finished trial's
    settings (not trained), else the outcome auto recorded, else Optuna's state."""
    return "repeated" if "same_as" in t.user_attrs else t.user_attrs.get("outcome") or t.state.name.lower()


def _trial_row(t, out: Path, folder: Path) -> str:
    a = t.user_attrs
    state = f"the settings of trial {a['same_as']}" if "same_as" in a else outcome(t)
    run = a.get("run", "")
    page = out / run / "report.html"
    link = (f'<a href="{html.escape(os.path.relpath(page, folder))}">{html.escape(run)}</a>' if page.is_file()
            else html.escape(run))
    value = "" if t.value is None else f"{t.value:.5f}"
    seconds = format_duration(a["seconds"]) if "seconds" in a else ""
    return (f'<tr class="{html.escape(state)}">{_cell(t.number)}<td>{link}</td>{_cell(t.params.get("recipe", ""))}'
            f'{_cell(_knobs(t.params))}{_cell(value)}{_cell(state)}{_cell(seconds)}{_cell(a.get("error", ""))}</tr>')


WAYS = {"best": "the best trial alone", "blend": "a blend of the best trials (up to 20)",
        "portfolio": "a blend of the portfolio's trials"}


def numbers(s: dict) -> list[str]:
    """The numbers to trust beside the flattering ones, one line each: for the closing lines and the page."""
    m, sel, b, best, c = s["metric"], s["selection"], s["blend"], s["best"], s["choice"]
    items = [f"best trial {best['trial']} ({best['recipe']}, run {best['run']}): {m} {best['cv']:.5f} out of fold, "
             f"as submitted",
             f"the best of the {sel['trials']} finished trials chosen on the other folds' rows, fold by fold: {m} "
             f"{sel['other_rows']:.5f} on the rows it was not chosen on, against {sel['same_rows']:.5f} on every row: the "
             f"choice flatters the best CV by {sel['drop']:.5f}"]
    if len(c["scores"]) > 1:
        ways = ", ".join(f"{WAYS[w]} {score:.5f}" for w, score in c["scores"].items())
        items.append(f"{ways}: each chosen (the trials ranked, the weights fit) on the other folds' rows, scored on "
                     f"the fold's; submitted: {WAYS[c['chosen']]}" + (
                         "" if c["chosen"] == c["submitted"] else " (its blend failed: the best trial alone instead)"))
    if b is not None:
        weights = ", ".join(f"{r} {w:.2f}" for r, w in b["weights"].items() if w > 0)
        items.append(f"blend {b['name']} ({weights}): {m} {b['cv']:.5f} with weights fit on the rows it scores")
    items.append(f"estimate {s['estimate']:.5f}: what the submission's way of choosing scores on rows it was not "
                 f"chosen on")
    return items


def write_page(path: Path, summary: dict, study, out: Path) -> None:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(summary["trials"].items()))
    rows = "".join(_trial_row(t, out, path.parent) for t in study.get_trials(deepcopy=False))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = (f"<h1>auto: {html.escape(summary['study'])}</h1>"
            f"<p class=muted>{now}; study {html.escape(summary['storage'])}; "
            f"{format_duration(summary['seconds'])} of a {format_duration(summary['budget_seconds'])} budget; "
            f"trials: {html.escape(counts)}</p>"
            f"<p>submission: <code>{html.escape(summary['submission'])}</code></p>"
            f"<ul>{''.join(f'<li>{html.escape(i)}</li>' for i in numbers(summary))}</ul>"
            "<h2>Trials</h2><table><tr><th>trial</th><th>run</th><th>recipe</th><th>knobs</th>"
            f"<th>{html.escape(summary['metric'])}</th><th>outcome</th><th>time</th><th>error</th></tr>{rows}</table>")
    write_text(path, f"<!doctype html><html><head><meta charset=utf-8><title>auto: {html.escape(summary['study'])}"
                     f"</title><style>{STYLE}</style></head><body>{body}</body></html>\n")
