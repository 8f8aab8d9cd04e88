"""report.md, report.json and the run's invariants (what makes ``pooch demo`` exit non-zero)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tooling.demo.plots import table_rows

MAX_LIVE_FALLBACK_SHARE = 0.05


def invariants(report: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Each check: name, ok, detail. Any failing one means the run is broken."""
    exp, preds = report["experiment"], report["predictions"]
    checks = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"name": name, "ok": bool(ok), "detail": detail})

    published = [m for m in report["models"] if "rogue" not in m["actor"]]
    check("a model was trained", bool(published), f"{len(published)} versions published by the trainer")
    check("predictions were made", preds["total"] > 0, f"{preds['total']:,} predictions")
    check("the experiment started", exp["started_at"] is not None, f"started_at {exp['started_at']}")
    check("the experiment has pupdates", exp["pupdates"] > 0, f"{exp['pupdates']:,} in the experiment")
    share = preds["fallback_share"]
    check(
        f"fewer than {MAX_LIVE_FALLBACK_SHARE:.0%} of live predictions fell back",
        share is not None and share < MAX_LIVE_FALLBACK_SHARE,
        f"{preds['fallbacks']:,} of {preds['in_experiment']:,} ({(share or 0):.2%}): "
        f"{preds['fallbacks_by_reason']}",
    )
    check(
        "one prediction per pupdate",
        exp["duplicate_predictions"] == 0,
        f"{exp['duplicate_predictions']} duplicates",
    )
    worlds = exp["worlds"]
    arms = exp["arms"]
    check(
        "worlds add up to their arms",
        worlds["historical"]["pupdates"] == arms["baseline"]["pupdates"]
        and worlds["machine-learned"]["pupdates"]
        == arms["champion"]["pupdates"] + arms["challenger"]["pupdates"]
        and sum(w["pupdates"] for w in worlds.values()) == exp["pupdates"],
        "historical = baseline arm, machine-learned = champion + challenger",
    )
    check(
        "labelled <= pupdates in every world",
        all(w["labelled"] <= w["pupdates"] for w in [*worlds.values(), *arms.values()]),
        ", ".join(f"{k} {w['labelled']}/{w['pupdates']}" for k, w in worlds.items()),
    )
    intervals_ok = all(
        w.get("cs_low") is None or w["cs_low"] <= w["likes_per_pupdate"] <= w["cs_high"]
        for w in [*worlds.values(), *arms.values()]
    )
    check("every interval contains its estimate", intervals_ok, "cs_low <= likes per pupdate <= cs_high")
    check(
        "both worlds have labels",
        all(w["labelled"] >= 2 for w in worlds.values()),
        "labelled >= 2 in each world",
    )
    if plan.get("rogue"):
        r = report.get("rogue") or {}
        check(
            "the rogue version was paused",
            bool(r.get("paused")),
            f"{r.get('model_version')}: {r.get('pause_reason') or 'not paused'}",
        )
    if plan.get("chaos"):
        chaos = (report["run"].get("facts") or {}).get("chaos") or {}
        check(
            "the killed service was restarted",
            bool(chaos.get("new_pid")) and "chaos_ready" in report["run"]["marks"],
            json.dumps(chaos),
        )
    return checks


def verdict_text(exp: dict[str, Any]) -> str:
    capped = exp.get("capped") or {}
    out = []
    adjusted = capped.get("adjusted") or {}
    for name, lift, what in (
        (
            "primary",
            adjusted.get("lift"),
            f"likes per pupdate capped at {capped.get('cap')}, regression-adjusted "
            f"(R2 {adjusted.get('r2') or 0:.2f})",
        ),
        ("capped, unadjusted", capped.get("lift"), f"likes per pupdate capped at {capped.get('cap')}"),
        ("raw", exp.get("lift"), "likes per pupdate"),
    ):
        if not lift:
            out.append(f"{name} ({what}): no verdict, too few labels.")
            continue
        sure = "excludes zero" if lift["excludes_zero"] else "does not exclude zero yet: no verdict"
        out.append(
            f"{name} ({what}): machine-learned {lift['difference']:+.2f} ({lift['relative_lift']:+.1%}) "
            f"over historical, 95% always-valid interval [{lift['cs_low']:+.2f}, {lift['cs_high']:+.2f}], "
            f"which {sure}."
        )
    clustered = adjusted.get("lift_dog_clustered")
    if clustered:
        out.append(
            f"Check with dogs as clusters ({clustered['dogs']:,} dogs) for the primary metric: "
            f"[{clustered['cs_low']:+.2f}, {clustered['cs_high']:+.2f}], which "
            + ("excludes zero too." if clustered["excludes_zero"] else "does not exclude zero.")
        )
    return "**" + out[0] + "** " + " ".join(out[1:])


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_finite(report), indent=2, sort_keys=True, default=str))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def markdown(report: dict[str, Any]) -> str:
    exp, m, run = report["experiment"], report["method"], report["run"]
    lift = exp["lift"]
    header, rows = table_rows(report)
    lines = [f"# Pooch Predictor demo: {run['prefix']}", ""]
    verdict = verdict_text(exp)
    lines += [verdict, ""]
    lines += [
        "## The experiment (possible worlds)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        f"Method: {m['name']}; alpha {m['alpha']:.2f} over the whole experiment however often it is "
        "looked at; "
        f"mixture sd tau = {m['mixture_sd']:g} likes, fixed in the policy file before the run. Sample sizes: "
        f"{exp['worlds']['historical']['labelled']:,} labelled pupdates in the historical world, "
        f"{exp['worlds']['machine-learned']['labelled']:,} in the machine-learned one "
        f"(the supervisor judges a challenger from {m['min_labelled_per_arm']} per arm). "
        "Fixed-n Welch interval of the lift, for reference (valid for one look only): "
        + (f"[{lift['ci_low']:+.2f}, {lift['ci_high']:+.2f}]." if lift else "-"),
        "",
        "Definitions (recomputable from the topics alone): " + report["definition"],
        "",
        _truth_line(run),
        "",
        "![likes per pupdate](likes_per_pupdate.png)",
        "",
        "![experiment table](experiment_table.png)",
        "",
        "## The app and the predictive system",
        "",
    ]
    adv = (run.get("facts") or {}).get("advisor") or {}
    preds = report["predictions"]
    lat = report["latency_ms"]["quantiles"] or {}
    lines += [
        f"* Owners posted {adv.get('posts', 0):,} pupdates live; {adv.get('advised', 0):,} after asking the "
        f"what-if API ({adv.get('advised_by_arm', {})}); **{adv.get('first_draft_posted', 0):,} "
        f"({_pct(adv.get('first_draft_share'))}) posted their first draft: the API was slow or down**: "
        f"{adv.get('first_draft_by_reason', {})}. What-if latency seen by the app: p50 "
        f"{adv.get('latency_ms_p50') or 0:.1f} ms, p99 {adv.get('latency_ms_p99') or 0:.1f} ms.",
        f"* Predictions in the experiment: {preds['in_experiment']:,}, of which {preds['fallbacks']:,} "
        "fell back "
        f"({_pct(preds['fallback_share'])}): {preds['fallbacks_by_reason']}.",
        f"* End-to-end latency (posted_at to predicted_at): p50 {lat.get('p50', 0):,.0f} ms, "
        "p90 "
        f"{lat.get('p90', 0):,.0f} ms, p99 {lat.get('p99', 0):,.0f} ms, max {lat.get('max', 0):,.0f} ms.",
        "",
        "![latency](latency.png)",
        "",
        "## Models",
        "",
        "| version | by | validation MAE / baseline | realised MAE / baseline | labelled in experiment |",
        "|---|---|---|---|---|",
    ]
    for mod in report["models"]:
        val = mod["validation"].get("mae_ratio_to_baseline")
        lines.append(
            f"| {mod['model_version']} | {mod['actor']} | {_num(val)} | "
            f"{_num(mod['realised_mae_ratio'])} | "
            f"{mod['experiment_predictions_labelled']:,} |"
        )
    lines += ["", "![model errors](model_errors.png)", "", "## Supervision", ""]
    r = report.get("rogue")
    if r:
        served = ", ".join(f"{k} {v}" for k, v in list(r["served_instead"].items())[:4]) or "-"
        lines += [
            f"* Rogue version `{r['model_version']}` (nonsense for {r['country']}) activated at "
            f"{_rel(r['activated_at'], exp['started_at'])}; first invalid output at "
            f"{_rel(r['first_invalid_output_at'], exp['started_at'])}; "
            + (
                f"**paused by {r['paused_by']} {r['pause_delay_ms']} ms after its first bad output** "
                f"({r['pause_delay_after_activation_ms']} ms after its activation): {r['pause_reason']}. "
                f"Champion put back: `{r['champion_restored']}`. What served {r['country']} afterwards: "
                f"{served}. {r['invalid_outputs_contained']} invalid outputs were contained by the scorer "
                "(its baseline served instead)."
                if r["paused"]
                else "**NOT paused.**"
            ),
        ]
    chaos = (run.get("facts") or {}).get("chaos")
    if chaos:
        marks = run["marks"]
        if "chaos_ready" in marks:
            lines.append(
                f"* Chaos: SIGKILL of {chaos['service']} (pid {chaos['old_pid']}) at "
                f"{_rel(marks['chaos_kill'], exp['started_at'])}; supervisord restarted it as pid "
                f"{chaos['new_pid']} after {(marks['chaos_restarted'] - marks['chaos_kill']) / 1000:.1f} s, "
                f"ready again after {(marks['chaos_ready'] - marks['chaos_kill']) / 1000:.1f} s."
            )
        else:
            lines.append(f"* Chaos: {chaos}")
    lines += ["", "| at | kind | version | by | reason |", "|---|---|---|---|---|"]
    for d in report["decisions"]:
        if d["kind"] == "PUBLISHED":
            continue
        lines.append(
            f"| {_rel(d['at'], exp['started_at'])} | {d['kind']} | {d['model_version']} | {d['actor']} | "
            f"{d['reason'][:160].replace('|', '/')} |"
        )
    lines += ["", "![decisions](decisions.png)", "", "## Checks", ""]
    for c in report["invariants"]:
        lines.append(f"* {'PASS' if c['ok'] else 'FAIL'}: {c['name']} ({c['detail']})")
    lines += ["", f"Topics of this run: `POOCH_TOPIC_PREFIX={run['prefix']} pooch topics`", ""]
    return "\n".join(lines)


def _truth_line(run: dict[str, Any]) -> str:
    t = (run.get("facts") or {}).get("truth")
    if not t:
        return ""
    h, m = t["historical"], t["machine-learned"]
    if not h["expected_likes_per_pupdate"] or not m["expected_likes_per_pupdate"]:
        return ""
    return (
        "The simulator's hidden truth (never seen by the system; the noise-free answer the experiment "
        f"estimates): expected likes per pupdate {h['expected_likes_per_pupdate']:.2f} in the historical "
        "world "
        f"({h['pupdates']:,} posts), {m['expected_likes_per_pupdate']:.2f} in the machine-learned one "
        f"({m['pupdates']:,}): {t['relative_lift']:+.1%}."
    )


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _rel(at: int | None, start: int | None) -> str:
    if at is None or start is None:
        return "-"
    return f"t{(at - start) / 1000:+.1f} s"
