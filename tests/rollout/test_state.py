"""rollout.json validation and the pure transition functions."""

import copy
import datetime
import json
import os

import pytest

from rollout import state as st
from rollout.errors import RolloutError

NOW = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)


def staged(*versions, canary_percent=10):
    """Return a state after staging `versions` in order."""
    state = st.RolloutState.empty("taxi")
    for version in versions:
        state = st.stage(state, version, canary_percent, actor="tester",
                         now=NOW)
    return state


def test_first_push_becomes_stable_then_canary():
    state = st.stage(st.RolloutState.empty("taxi"), 1, 10, actor="ci",
                     reason="first", metrics={"auc": 0.8}, now=NOW)
    assert (state.phase, state.stable_version, state.canary_version) == (
        "stable", 1, None)
    event = state.last_event
    assert event["event"] == "staged_stable"
    assert event["at"] == "2024-05-01T12:00:00.000Z"
    assert event["actor"] == "ci" and event["reason"] == "first"
    assert event["from"] == {"stable": None, "canary": None, "traffic": 0}
    assert event["to"] == {"stable": 1, "canary": None, "traffic": 0}
    assert event["version"] == 1 and event["metrics"] == {"auc": 0.8}

    state = st.stage(state, 2, 25, now=NOW)
    assert (state.phase, state.stable_version, state.canary_version,
            state.canary_traffic_percent) == ("canary", 1, 2, 25)
    assert state.last_event["event"] == "staged_canary"
    assert "replaced_canary" not in state.last_event
    assert "@" in state.last_event["actor"]  # default user@host


def test_new_canary_replaces_live_canary_and_records_it():
    state = st.stage(staged(1, 2), 3, 5, now=NOW)
    assert (state.stable_version, state.canary_version,
            state.canary_traffic_percent) == (1, 3, 5)
    assert state.last_event["replaced_canary"] == 2
    assert state.last_version == 3


def test_transitions_never_mutate_their_input():
    state = staged(1, 2)
    frozen = copy.deepcopy(state.to_dict())
    st.set_traffic(state, 50)
    st.promote(state)
    st.rollback(state)
    st.rollback(state, to_version=1, staged_versions=[1, 2])
    st.record_not_pushed(state, "worse", {"auc": 0.1})
    assert state.to_dict() == frozen


def test_set_traffic_promote_and_rollback_cycle():
    state = st.set_traffic(staged(1, 2), 50, reason="looks good", now=NOW)
    assert state.canary_traffic_percent == 50
    assert state.last_event["event"] == "traffic_changed"
    assert state.last_event["from"]["traffic"] == 10
    assert state.last_event["to"]["traffic"] == 50

    promoted = st.promote(state, now=NOW)
    assert (promoted.phase, promoted.stable_version, promoted.canary_version,
            promoted.canary_traffic_percent) == ("stable", 2, None, 0)
    assert promoted.last_event["event"] == "promoted"
    assert promoted.last_event["version"] == 2

    withdrawn = st.rollback(state, now=NOW)
    assert (withdrawn.phase, withdrawn.stable_version,
            withdrawn.canary_version) == ("stable", 1, None)
    assert withdrawn.last_event["event"] == "rolled_back"
    assert withdrawn.last_event["version"] == 2

    back = st.rollback(promoted, to_version=1, staged_versions=[1, 2])
    assert (back.stable_version, back.canary_version) == (1, None)
    assert back.last_event["to"] == {"stable": 1, "canary": None,
                                     "traffic": 0}
    assert [e["event"] for e in back.history] == [
        "staged_stable", "staged_canary", "traffic_changed", "promoted",
        "rolled_back"]


def test_record_not_pushed_changes_only_history():
    state = staged(1, 2)
    after = st.record_not_pushed(state, "auc below threshold",
                                 {"auc": float("nan"), "n": 3})
    assert after.to_dict() | {"history": None} == (
        state.to_dict() | {"history": None})
    assert after.last_event["event"] == "not_blessed"
    assert after.last_event["metrics"] == {"auc": "nan", "n": 3}
    assert "version" not in after.last_event


@pytest.mark.parametrize("percent", [-1, 101, "abc", "50", 50.0, True, None])
def test_set_traffic_rejects_bad_percent(percent):
    with pytest.raises(RolloutError, match="0 to 100"):
        st.set_traffic(staged(1, 2), percent)


def test_errors_when_there_is_no_canary():
    stable = staged(1)
    with pytest.raises(RolloutError, match="no canary"):
        st.promote(stable)
    with pytest.raises(RolloutError, match="no canary"):
        st.set_traffic(stable, 5)
    with pytest.raises(RolloutError) as info:
        st.rollback(stable, staged_versions=[1, 4])
    message = str(info.value)
    assert "nothing to roll back" in message
    assert "--to VERSION" in message and "1, 4" in message
    with pytest.raises(RolloutError, match="nothing staged"):
        st.promote(st.RolloutState.empty("taxi"))


def test_rollback_to_unknown_version_lists_staged_versions():
    with pytest.raises(RolloutError) as info:
        st.rollback(staged(1, 2), to_version=7, staged_versions=[1, 2])
    assert "version 7" in str(info.value) and "1, 2" in str(info.value)
    with pytest.raises(RolloutError, match="already the stable"):
        st.rollback(staged(1), to_version=1, staged_versions=[1])


def test_stage_refuses_a_version_that_is_not_newer():
    with pytest.raises(RolloutError, match="only grow"):
        st.stage(staged(1, 5), 3, 10)


def test_save_and_load_round_trip_with_backup(tmp_path):
    path = str(tmp_path / "rollout.json")
    assert st.load_state(path, "taxi") == st.RolloutState.empty("taxi")
    first, second = staged(1), staged(1, 2)
    st.save_state(path, first)
    assert not os.path.exists(path + ".bak")
    st.save_state(path, second)
    assert st.load_state(path, "taxi") == second
    assert st.load_state(path + ".bak", "taxi") == first


def _write(tmp_path, data):
    path = tmp_path / "rollout.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_invalid_json_names_file_line_and_fix(tmp_path):
    path = _write(tmp_path, '{\n  "model_name": "taxi",\n  oops\n}')
    with pytest.raises(RolloutError) as info:
        st.load_state(path, "taxi")
    assert str(info.value) == (
        f"{path} is not valid JSON (line 3): restore it from "
        f"rollout.json.bak or delete it to start over")


@pytest.mark.parametrize("change, field", [
    ({"canary_traffic_percent": 150}, "canary_traffic_percent"),
    ({"canary_traffic_percent": "10"}, "canary_traffic_percent"),
    ({"stable_version": True}, "stable_version"),
    ({"canary_version": 1}, "canary_version equals stable_version"),
    ({"phase": "stable"}, "phase is 'stable' but canary_version"),
    ({"phase": "live"}, "phase"),
    ({"last_version": 1}, "last_version"),
    ({"model_name": "other"}, "belongs to model 'other'"),
    ({"history": [{"event": "x"}]}, "history[0]"),
    ({"extra": 1}, "unknown field(s) extra"),
])
def test_load_rejects_inconsistent_or_mistyped_fields(tmp_path, change, field):
    data = staged(1, 2).to_dict() | change
    path = _write(tmp_path, data)
    with pytest.raises(RolloutError) as info:
        st.load_state(path, "taxi")
    assert path in str(info.value)
    assert field in str(info.value)


def test_load_rejects_missing_fields(tmp_path):
    data = staged(1).to_dict()
    del data["phase"]
    with pytest.raises(RolloutError, match="missing field.*phase"):
        st.load_state(_write(tmp_path, data), "taxi")


def test_metrics_must_be_json_safe():
    with pytest.raises(RolloutError, match="metrics.auc"):
        st.record_not_pushed(staged(1), "x", {"auc": object()})


def test_rollout_json_on_an_object_store_is_read_and_validated_alike(tmp_path):
    """A gs:// serving root (Kubeflow) goes through TFX's fileio; ram:// stands in here."""
    from tfx.dsl.io import fileio
    root = "ram://rollout-%s" % os.getpid()
    path = root + "/taxi/rollout.json"
    assert st.load_state(path, "taxi") == st.RolloutState.empty("taxi")
    fileio.makedirs(root + "/taxi")
    state = staged(1, 2)
    with fileio.open(path, "wb") as f:
        f.write(st.dumps_state(state).encode())
    assert st.load_state(path, "taxi") == state
    with fileio.open(path, "wb") as f:
        f.write(b"{not json")
    with pytest.raises(RolloutError, match="not valid JSON.*rollout.json.bak"):
        st.load_state(path, "taxi")
