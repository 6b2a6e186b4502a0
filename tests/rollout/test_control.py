"""RolloutController end to end: files on disk, errors, crashes, audit."""

import dataclasses
import json
import os

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from rollout import audit
from rollout import control
from rollout import staging
from rollout.errors import RolloutChangedError, RolloutError

from tests.rollout.conftest import snapshot_tree


def read_json(controller):
    with open(controller.state_path) as handle:
        return json.load(handle)


def served(controller):
    """Return (versions, labels, base_path) from models.config."""
    config = model_server_config_pb2.ModelServerConfig()
    with open(controller.models_config_path) as handle:
        text_format.Parse(handle.read(), config)
    (entry,) = [c for c in config.model_config_list.config
                if c.name == controller.model_name]
    return (list(entry.model_version_policy.specific.versions),
            dict(entry.version_labels), entry.base_path)


def predictor(controller):
    with open(controller.manifest_path) as handle:
        return yaml.safe_load(handle)["spec"]["predictor"]


def test_results_are_frozen_and_a_misspelt_field_fails_loudly(controller, make_model):
    """A typo in a result key once silently disabled a CanaryPusher check."""
    result = controller.stage(make_model())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.version = 7
    with pytest.raises(AttributeError):
        result.versoin  # noqa: B018  (the typo is the point)
    with pytest.raises(TypeError):   # not a dict: no key that quietly reads as None
        result["version"]  # noqa: B018
    assert not hasattr(result, "get")


def test_full_lifecycle_keeps_all_files_in_sync(controller, make_model):
    result = controller.stage(make_model(), reason="first model")
    assert result.event == "staged_stable" and result.version == 1
    assert served(controller)[:2] == ([1], {"stable": 1})
    assert predictor(controller)["model"]["storageUri"] == (
        "gs://bucket/serving/taxi/1")

    result = controller.stage(make_model(), canary_percent=10,
                              metrics={"auc": 0.9})
    assert result.before.canary is None
    assert dataclasses.asdict(result.after) == {"phase": "canary", "stable": 1,
                                                "canary": 2, "traffic": 10}
    assert served(controller)[:2] == ([1, 2], {"stable": 1, "canary": 2})
    assert predictor(controller)["canaryTrafficPercent"] == 10

    controller.set_traffic(50, reason="ramp up")
    assert read_json(controller)["canary_traffic_percent"] == 50
    assert predictor(controller)["canaryTrafficPercent"] == 50

    controller.promote(reason="good")
    data = read_json(controller)
    assert (data["phase"], data["stable_version"], data["canary_version"]) == (
        "stable", 2, None)
    assert served(controller)[:2] == ([2], {"stable": 2})
    assert "canaryTrafficPercent" not in predictor(controller)

    controller.rollback(to_version=1, reason="incident")
    assert served(controller)[:2] == ([1], {"stable": 1})
    assert predictor(controller)["model"]["storageUri"].endswith("/taxi/1")

    status = controller.status()
    assert status.in_sync, status.problems
    assert status.staged_versions == [1, 2]
    assert status.last_event["event"] == "rolled_back"
    assert [e["event"] for e in data["history"]] == [
        "staged_stable", "staged_canary", "traffic_changed", "promoted"]
    text = control.format_status(status)
    assert "v1" in text and "100% of traffic" in text and "in sync" in text


@pytest.fixture
def canary_live(controller, make_model):
    controller.stage(make_model())
    controller.stage(make_model())
    return controller


@pytest.mark.parametrize("action", [
    lambda c: c.set_traffic(-1),
    lambda c: c.set_traffic(101),
    lambda c: c.set_traffic("abc"),
    lambda c: c.rollback(to_version=9),
    lambda c: c.stage("/nonexistent/model"),
    lambda c: c.stage(os.path.dirname(c.state_path), canary_percent=200),
    lambda c: c.stage(os.path.dirname(c.state_path), keep=0),
])
def test_invalid_commands_change_no_file(canary_live, serving_root, action):
    before = snapshot_tree(serving_root)
    with pytest.raises(RolloutError):
        action(canary_live)
    assert snapshot_tree(serving_root) == before


@pytest.mark.parametrize("action", [
    lambda c, expect: c.set_traffic(50, expect=expect),
    lambda c, expect: c.promote(expect=expect),
    lambda c, expect: c.rollback(expect=expect),
])
def test_a_decision_for_another_rollout_is_not_applied(canary_live, serving_root, action):
    """Compare-and-set: analyze/watch decided on stable v1 / canary v2 at 10%;
    a person moved it to 25% meanwhile, so the decision changes nothing."""
    canary_live.set_traffic(25)
    before = snapshot_tree(serving_root)
    with pytest.raises(RolloutChangedError, match=(
            r"decision was made for stable v1 / canary v2 at 10%, but rollout.json now "
            r"says stable v1 / canary v2 at 25%")):
        action(canary_live, (1, 2, 10))
    assert snapshot_tree(serving_root) == before
    assert action(canary_live, (1, 2, 25)).before.traffic == 25   # still current: applied


def test_promote_without_canary_changes_no_file(
        controller, make_model, serving_root):
    controller.stage(make_model())
    before = snapshot_tree(serving_root)
    with pytest.raises(RolloutError, match="no canary"):
        controller.promote()
    with pytest.raises(RolloutError, match="nothing to roll back"):
        controller.rollback()
    assert snapshot_tree(serving_root) == before


def test_commands_on_a_never_staged_model_create_nothing(serving_root):
    controller = control.RolloutController(serving_root, "taxi")
    with pytest.raises(RolloutError, match="nothing staged"):
        controller.promote()
    with pytest.raises(RolloutError, match="not staged"):
        controller.rollback(to_version=1)
    assert not os.path.exists(serving_root)
    assert controller.status().phase == "empty"


def test_corrupted_rollout_json_blocks_every_command(
        canary_live, make_model, serving_root):
    with open(canary_live.state_path, "w") as handle:
        handle.write('{"model_name": "taxi",\n')
    before = snapshot_tree(serving_root)
    for action in (lambda: canary_live.stage(make_model()),
                   lambda: canary_live.set_traffic(20),
                   canary_live.promote, canary_live.rollback,
                   canary_live.status, canary_live.repair):
        with pytest.raises(RolloutError) as info:
            action()
        assert canary_live.state_path in str(info.value)
        assert "rollout.json.bak" in str(info.value)
    assert snapshot_tree(serving_root) == before


def test_crash_before_rename_changes_nothing(
        canary_live, make_model, serving_root, monkeypatch):
    before = snapshot_tree(serving_root)

    def crash(temp_dir, final_dir):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(staging, "_before_rename", crash)
    with pytest.raises(RuntimeError):
        canary_live.stage(make_model())
    assert snapshot_tree(serving_root) == before
    assert staging.list_versions(serving_root, "taxi") == [1, 2]


def test_failed_validation_changes_nothing(
        canary_live, make_model, serving_root):
    before = snapshot_tree(serving_root)

    def reject(path):
        raise RolloutError(f"{path} lacks serving_default")

    with pytest.raises(RolloutError, match="serving_default"):
        canary_live.stage(make_model(), validate=reject)
    assert snapshot_tree(serving_root) == before


def test_leftovers_of_a_killed_stage_are_cleaned_up(
        canary_live, make_model, serving_root):
    leftover = os.path.join(serving_root, "taxi", ".staging-3-999999")
    os.makedirs(leftover)
    assert canary_live.stage(make_model()).version == 3
    assert not os.path.exists(leftover)


def test_prune_keeps_stable_and_canary(controller, make_model, serving_root):
    controller.stage(make_model(), keep=2)  # v1 stable
    for _ in range(4):
        controller.stage(make_model(), keep=2)  # v2..v5 canaries
    controller.set_traffic(30)
    assert staging.list_versions(serving_root, "taxi") == [1, 4, 5]
    result = controller.stage(make_model(), keep=2)
    assert result.pruned == [4]
    assert staging.list_versions(serving_root, "taxi") == [1, 5, 6]
    controller.promote()
    result = controller.stage(make_model(), keep=1)  # v7: stable 6, canary 7
    assert staging.list_versions(serving_root, "taxi") == [6, 7]
    # Numbers keep growing although v2..v4 are gone.
    assert controller.stage(make_model()).version == 8


def test_missing_version_dir_is_an_error(canary_live, serving_root):
    staging.remove_version(serving_root, "taxi", 1)
    before = snapshot_tree(serving_root)
    with pytest.raises(RolloutError) as info:
        canary_live.set_traffic(20)
    assert "stable version 1 is missing" in str(info.value)
    assert "rollback --to" in str(info.value)
    assert snapshot_tree(serving_root) == before
    assert not canary_live.status().in_sync
    # The way out: serve a version that exists.
    canary_live.rollback(to_version=2)
    assert canary_live.status().in_sync


def test_missing_canary_dir_can_be_withdrawn(canary_live, serving_root):
    staging.remove_version(serving_root, "taxi", 2)
    [problem] = canary_live.status().problems
    assert "canary version 2 is missing" in problem
    assert "`tfx-canary rollout rollback`" in problem
    canary_live.rollback()
    assert canary_live.status().in_sync


def test_status_reports_drift_and_repair_fixes_it(canary_live):
    with open(canary_live.models_config_path, "w") as handle:
        handle.write("model_config_list {}\n")
    os.remove(canary_live.manifest_path)
    status = canary_live.status()
    assert not status.in_sync
    assert any("models.config" in p and "repair" in p
               for p in status.problems)
    result = canary_live.repair()
    # The manifest prefix is known from the controller here.
    assert dataclasses.asdict(result.files) == {"models_config": True,
                                                "kserve_manifest": True}
    assert canary_live.status().in_sync
    assert dataclasses.asdict(canary_live.repair().files) == {"models_config": False,
                                                              "kserve_manifest": False}


def test_recorded_prefix_and_base_path_are_reused(serving_root, make_model):
    pipeline = control.RolloutController(
        serving_root, "taxi", storage_uri_prefix="s3://models",
        tf_serving_root="/models")
    pipeline.stage(make_model())
    pipeline.stage(make_model())
    # The operator's CLI knows neither setting; it must not lose them.
    operator = control.RolloutController(serving_root, "taxi")
    operator.promote()
    assert served(operator) == ([2], {"stable": 2}, "/models/taxi")
    assert predictor(operator)["model"]["storageUri"] == "s3://models/taxi/2"
    assert operator.status().in_sync


def test_record_not_pushed_keeps_serving_unchanged(canary_live, serving_root):
    before = snapshot_tree(serving_root)
    canary_live.record_not_pushed("auc 0.61 < 0.7", {"auc": 0.61})
    after = snapshot_tree(serving_root)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {"taxi/rollout.json", "taxi/rollout.json.bak"}
    assert read_json(canary_live)["history"][-1]["event"] == "not_blessed"


def _mlmd_config(tmp_path):
    return audit.sqlite_connection_config(str(tmp_path / "metadata.sqlite"))


def test_transitions_are_audited_and_linked(
        serving_root, make_model, tmp_path):
    from tests.rollout.test_audit import put_pushed_model

    config = _mlmd_config(tmp_path)
    store = audit.connect(config)
    pushed = {v: put_pushed_model(store, v, "taxi") for v in (1, 2)}
    controller = control.RolloutController(
        serving_root, "taxi", metadata_connection_config=config)
    controller.stage(make_model())
    controller.stage(make_model())
    result = controller.promote(reason="looks good")
    assert result.audit.error is None
    rows = audit.transitions(store, "taxi")
    assert [(r["event"], r["pushed_model_artifact_id"]) for r in rows] == [
        ("staged_stable", pushed[1]), ("staged_canary", pushed[2]),
        ("promoted", pushed[2])]
    assert rows[-1]["reason"] == "looks good"


def test_missing_audit_records_are_back_filled(
        serving_root, make_model, tmp_path):
    # Changes made while MLMD was unavailable (or a crash right after
    # writing rollout.json) must still reach the audit trail.
    control.RolloutController(serving_root, "taxi").stage(make_model())
    config = _mlmd_config(tmp_path)
    broken = control.RolloutController(
        serving_root, "taxi",
        metadata_connection_config=audit.sqlite_connection_config(
            str(tmp_path / "no" / "such" / "dir.sqlite"), create=False))
    result = broken.stage(make_model())
    assert "recording it in ML Metadata failed" in result.audit.error
    assert broken.status().canary_version == 2  # the change still applied
    controller = control.RolloutController(
        serving_root, "taxi", metadata_connection_config=config)
    controller.set_traffic(20)
    rows = audit.transitions(audit.connect(config), "taxi")
    assert [r["event"] for r in rows] == [
        "staged_stable", "staged_canary", "traffic_changed"]
    assert controller.repair().audit.execution_ids == []
