"""A short demo, end to end: it must produce a model, predictions, the experiment, a paused rogue
version, a restarted service, and a complete report folder, with every invariant passing."""

from __future__ import annotations

import json

from tooling.demo.run import LAST_DEMO


def test_short_demo_runs_clean_and_writes_the_report(short_demo):
    report = short_demo.report
    failed = [c for c in report["invariants"] if not c["ok"]]
    assert not failed, failed
    folder = short_demo.folder
    for name in ("report.md", "report.json", *report["plots"].values()):
        assert (folder / name).stat().st_size > 0, name
    on_disk = json.loads((folder / "report.json").read_text())
    assert on_disk["run"]["prefix"] == short_demo.prefix
    text = (folder / "report.md").read_text()
    assert short_demo.prefix in text and "always-valid" in text


def test_the_closed_loop_ran_in_both_worlds(short_demo):
    exp = short_demo.report["experiment"]
    advisor = short_demo.report["run"]["facts"]["advisor"]
    # owners asked the what-if API and got answers from both worlds, as the scorer routes them
    assert advisor["advised"] > 100
    assert {"baseline", "champion"} <= set(advisor["advised_by_arm"])
    assert exp["worlds"]["historical"]["labelled"] > 50
    assert exp["worlds"]["machine-learned"]["labelled"] > 50
    # the scorer was SIGKILLed: the app posted first drafts meanwhile, counted, never waiting
    assert advisor["first_draft_posted"] > 0
    assert advisor["first_draft_share"] < 0.5


def test_the_rogue_version_was_paused_and_the_last_good_one_served(short_demo):
    rogue = short_demo.report["rogue"]
    assert rogue["paused"] and rogue["paused_by"] == "supervisor"
    # its nonsense was mostly in its country, contained by the scorer (a tree model leaks some of
    # it to rare and missing countries: 9 of 13 were in BR in one CI run, and the supervisor then
    # pauses it on the rate in "all", as the reason below allows)
    by_country = rogue["invalid_outputs_by_country"]
    assert by_country[rogue["country"]] > 0.5 * sum(by_country.values()), by_country
    assert "invalid_rate" in rogue["pause_reason"]
    assert rogue["champion_restored"] and rogue["champion_restored"] != rogue["model_version"]
    assert rogue["model_version"] not in rogue["served_instead"]


def test_supervisord_restarted_the_killed_service(short_demo):
    run = short_demo.report["run"]
    chaos = run["facts"]["chaos"]
    assert chaos["new_pid"] != chaos["old_pid"]
    assert run["marks"]["chaos_kill"] < run["marks"]["chaos_restarted"] <= run["marks"]["chaos_ready"]


def test_stack_status_knows_the_demo_prefix(short_demo, demo_state_dir):
    last = json.loads((demo_state_dir / LAST_DEMO).read_text())
    assert last["prefix"] == short_demo.prefix and last["state"] == "finished"
