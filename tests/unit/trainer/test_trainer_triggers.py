"""When a training run is due: the rule the trainer's loop asks each tick."""

from services.trainer.triggers import TriggerRules, VersionState, due

RULES = TriggerRules(retrain_every=5_000, retrain_interval_s=900.0)


def state(**kw) -> VersionState:
    base = dict(
        pending=None,
        retry_due=None,
        new_instances=0,
        seconds_since_last_run=0.0,
        has_model=True,
        ran_here=True,
    )
    return VersionState(**(base | kw))


def test_a_version_without_any_model_is_due_as_soon_as_it_has_instances():
    # The window's min_instances is the loop's check: due here means "train when there is enough".
    assert (
        due(RULES, state(has_model=False, ran_here=False, new_instances=1_200))
        == "first model (1200 instances)"
    )


def test_the_first_model_rule_applies_once_per_process_and_can_be_switched_off():
    assert due(RULES, state(has_model=False, ran_here=True, new_instances=1_200)) is None
    off = TriggerRules(5_000, 900.0, first_model_asap=False)
    assert due(off, state(has_model=False, ran_here=False, new_instances=1_200)) is None


def test_with_a_model_only_count_interval_request_or_retry_trigger():
    assert due(RULES, state(new_instances=4_999, seconds_since_last_run=899)) is None
    assert due(RULES, state(new_instances=5_000)) == "5000 new instances"
    assert (
        due(RULES, state(new_instances=1, seconds_since_last_run=900))
        == "900 s since the last run (1 new instances)"
    )
    assert due(RULES, state(new_instances=0, seconds_since_last_run=10_000)) is None
    assert due(RULES, state(pending="requested (POST /v1/train)")) == "requested (POST /v1/train)"
    assert due(RULES, state(retry_due=60.0)) == "retry 60 s after a failed run"
