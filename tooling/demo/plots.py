"""The report's PNG plots (matplotlib, Agg: no display needed), drawn from report.json's numbers."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen before pyplot loads

COLOURS = {"historical": "#7f7f7f", "machine-learned": "#1f77b4"}
KIND_COLOURS = {
    "PUBLISHED": "#2ca02c",
    "ACTIVATED": "#1f77b4",
    "PAUSED": "#d62728",
    "RESUMED": "#9467bd",
    "RETIRED": "#8c564b",
    "demo": "#ff7f0e",
}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def likes_over_time(report: dict[str, Any], path: Path) -> Path:
    exp = report["experiment"]
    panels = [("likes per pupdate", exp["series"])]
    if exp.get("series_capped"):
        panels.insert(
            0, (f"likes per pupdate, capped at {exp['capped']['cap']} (primary)", exp["series_capped"])
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for world, points in series.items():
            if not points:
                continue
            t = [p[0] for p in points]
            if world.startswith("arm "):  # an arm of the machine-learned world: its mean alone
                style = "--" if world.endswith("champion") else ":"
                ax.plot(
                    t,
                    [p[2] for p in points],
                    color=COLOURS["machine-learned"],
                    linestyle=style,
                    linewidth=1,
                    label=f"{world} (machine-learned): running mean",
                )
                continue
            ax.plot(t, [p[2] for p in points], color=COLOURS[world], label=f"{world}: running mean")
            ax.fill_between(
                t,
                [p[3] for p in points],
                [p[4] for p in points],
                color=COLOURS[world],
                alpha=0.2,
                label=f"{world}: 95% always-valid interval",
            )
        ax.set_xlabel("seconds since the experiment started (posting time)")
        ax.set_ylabel("likes within the label horizon, per pupdate")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(
        "Possible worlds: likes per pupdate per world and arm as the experiment went on "
        "(historical = arm baseline)"
    )
    return _save(fig, path)


def model_errors(report: dict[str, Any], path: Path) -> Path:
    rows = [m for m in report["models"] if m["realised_mae_ratio"] is not None or m["validation"]]
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.6 * len(rows) + 2.0)))
    labels = [m["model_version"][-8:] + (" (rogue)" if "rogue" in m["actor"] else "") for m in rows]
    realised = [m["realised_mae_ratio"] or 0.0 for m in rows]
    validation = [m["validation"].get("mae_ratio_to_baseline") or 0.0 for m in rows]
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], validation, height=0.4, color="#aec7e8", label="validation (newest slice)")
    ax.barh([i - 0.2 for i in y], realised, height=0.4, color="#1f77b4", label="realised in the experiment")
    for i, (r, m) in enumerate(zip(realised, rows, strict=True)):
        if m["realised_mae_ratio"] is not None:
            ax.text(
                r, i - 0.2, f" {r:.2f} (n={m['experiment_predictions_labelled']})", va="center", fontsize=8
            )
    ax.axvline(1.0, color="#d62728", linestyle="--", label="historical baseline")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.set_xlabel("mean absolute error / the historical baseline's (lower is better)")
    ax.set_title("Each model version's error against the baseline")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)
    return _save(fig, path)


def latency(report: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    hist = report["latency_ms"]["histogram"]
    q = report["latency_ms"]["quantiles"]
    if hist:
        edges, counts = hist["edges_ms"], hist["counts"]
        widths = [b - a for a, b in pairwise(edges)]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color="#1f77b4", edgecolor="white")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        for name in ("p50", "p99"):
            ax.axvline(
                q[name],
                color="#d62728" if name == "p99" else "#2ca02c",
                linestyle="--",
                label=f"{name} {q[name]:,.0f} ms",
            )
        ax.legend(fontsize=8)
    ax.set_xlabel("posted_at to predicted_at, ms (log); the bulk is the featurizer's lateness allowance")
    ax.set_ylabel("predictions")
    ax.set_title("End-to-end latency: posting to prediction")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def decisions_timeline(report: dict[str, Any], path: Path) -> Path:
    """One row per decision or demo action, in time order: what, on which version, by whom."""
    start = report["experiment"]["started_at"] or 0
    run = report["run"]
    items = [
        (
            (d["at"] - start) / 1000,
            d["kind"],
            f"{d['kind']} {d['model_version'][-8:]} by {d['actor']}"
            + (f" ({d['country']})" if d.get("country") else ""),
        )
        for d in report["decisions"]
    ]
    items += [((e["at"] - start) / 1000, "demo", f"demo: {e['text']}"[:70]) for e in run.get("events", [])]
    items.sort(key=lambda i: i[0])
    fig, ax = plt.subplots(figsize=(10, 0.36 * len(items) + 1.8))
    for row, (x, kind, text) in enumerate(items):
        y = len(items) - row
        ax.scatter(
            [x],
            [y],
            color=KIND_COLOURS.get(kind, "black"),
            s=45,
            zorder=3,
            marker="v" if kind == "demo" else "o",
        )
        ax.text(x, y, f"  {text}", va="center", fontsize=7.5)
    marks = run.get("marks", {})
    spans = [
        ("rogue_activated", "rogue_paused", "#d62728", "rogue serving"),
        ("chaos_kill", "chaos_ready", "#ff7f0e", "service down"),
    ]
    for a_, b_, colour, label in spans:
        if a_ in marks and b_ in marks:
            ax.axvspan(
                (marks[a_] - start) / 1000, (marks[b_] - start) / 1000, color=colour, alpha=0.15, label=label
            )
    for name in ("live_start", "posting_closed", "live_end"):
        if name in marks:
            ax.axvline((marks[name] - start) / 1000, color="#999999", linestyle=":")
            ax.text(
                (marks[name] - start) / 1000,
                len(items) + 0.7,
                " " + {"live_end": "last likes in"}.get(name, name.replace("_", " ")),
                fontsize=7,
                color="#666666",
            )
    xs = [i[0] for i in items] or [0.0]
    ax.set_xlim(min(xs) - 5, max(xs) + (max(xs) - min(xs)) * 0.6 + 10)
    ax.set_ylim(0.3, len(items) + 1.2)
    ax.set_yticks([])
    ax.set_xlabel("seconds since the experiment started (negative: warm start)")
    ax.set_title("Decisions on models (supervisor, operators) and what the demo did")
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def experiment_table(report: dict[str, Any], path: Path) -> Path:
    header, rows = table_rows(report)
    fig, ax = plt.subplots(figsize=(16, 0.4 * len(rows) + 0.9))
    ax.axis("off")
    tab = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.scale(1, 1.5)
    for (r, _c), cell in tab.get_celld().items():
        if r == 0:
            cell.set_facecolor("#dddddd")
            cell.set_text_props(weight="bold")
    m = report["method"]
    ax.set_title(
        f"The experiment (95% always-valid mSPRT intervals, tau={m['mixture_sd']:g} likes)", fontsize=10
    )
    return _save(fig, path)


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _interval(w: dict[str, Any]) -> str:
    if w.get("cs_low") is None:
        return "-"
    return f"{_fmt(w['likes_per_pupdate'])} [{_fmt(w['cs_low'])}, {_fmt(w['cs_high'])}]"


def _lift(lift: dict[str, Any] | None) -> str:
    if not lift:
        return "-"
    interval = f"[{lift['cs_low']:+.2f}, {lift['cs_high']:+.2f}]"
    return f"{lift['difference']:+.2f} ({lift['relative_lift']:+.1%}) {interval}"


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    exp = report["experiment"]
    capped = exp.get("capped") or {}
    cap = capped.get("cap")
    header = [
        "world / arm",
        "pupdates",
        "labelled",
        "likes per pupdate [interval]",
        f"capped at {cap} [interval]",
        "lift, capped + adjusted (primary)",
        "lift, capped",
        "lift, likes",
    ]
    rows = []
    entries = [(w, exp["worlds"][w], (capped.get("worlds") or {}).get(w, {})) for w in exp["worlds"]]
    entries += [
        (f"  arm {a}", v, (capped.get("arms") or {}).get(a, {}))
        for a, v in exp["arms"].items()
        if v["pupdates"]
    ]
    for name, w, c in entries:
        ml = name == "machine-learned"
        rows.append(
            [
                name,
                f"{w['pupdates']:,}",
                f"{w['labelled']:,}",
                _interval(w),
                _interval(c),
                _lift((capped.get("adjusted") or {}).get("lift")) if ml else "-",
                _lift(capped.get("lift")) if ml else "-",
                _lift(exp["lift"]) if ml else "-",
            ]
        )
    return header, rows


def write_all(report: dict[str, Any], folder: Path) -> dict[str, str]:
    made = {
        "likes_per_pupdate": likes_over_time(report, folder / "likes_per_pupdate.png"),
        "model_errors": model_errors(report, folder / "model_errors.png"),
        "latency": latency(report, folder / "latency.png"),
        "decisions": decisions_timeline(report, folder / "decisions.png"),
        "experiment_table": experiment_table(report, folder / "experiment_table.png"),
    }
    return {k: v.name for k, v in made.items()}
