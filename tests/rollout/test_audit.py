"""Audit trail in a real SQLite ML Metadata store."""

import json

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from rollout import audit
from rollout import state as st


@pytest.fixture
def store(tmp_path):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "metadata.sqlite")
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
    return metadata_store.MetadataStore(config)


def put_pushed_model(store, version, model_name=None, as_string=False):
    """Create a fake TFX PushedModel artifact like CanaryPusher will."""
    type_id = store.put_artifact_type(
        metadata_store_pb2.ArtifactType(name="PushedModel"))
    artifact = metadata_store_pb2.Artifact(
        type_id=type_id, uri=f"/pipeline/pushed/{version}")
    if as_string:
        artifact.custom_properties["pushed_version"].string_value = str(
            version)
    else:
        artifact.custom_properties["pushed_version"].int_value = version
    if model_name:
        artifact.custom_properties["model_name"].string_value = model_name
    [artifact_id] = store.put_artifacts([artifact])
    return artifact_id


def test_find_pushed_model_artifact_by_version_and_model(store):
    assert audit.find_pushed_model_artifact_id(store, "taxi", 1) is None
    first = put_pushed_model(store, 1, "taxi")
    put_pushed_model(store, 2, "fraud")
    as_text = put_pushed_model(store, 3, as_string=True)
    assert audit.find_pushed_model_artifact_id(store, "taxi", 1) == first
    assert audit.find_pushed_model_artifact_id(store, "taxi", 2) is None
    assert audit.find_pushed_model_artifact_id(store, "taxi", 3) == as_text


def test_transitions_are_recorded_linked_and_read_back_in_order(store):
    artifact_id = put_pushed_model(store, 2, "taxi")
    state = st.stage(st.RolloutState.empty("taxi"), 1, 10, actor="ci")
    state = st.stage(state, 2, 10, actor="ci", metrics={"auc": 0.91})
    state = st.promote(state, actor="alice@laptop", reason="metrics fine")
    audit.record_transition(store, "taxi", state.history[0], None)
    audit.record_transition(store, "taxi", state.history[1], artifact_id)
    exec_id = audit.record_transition(store, "taxi", state.history[2],
                                      artifact_id)

    rows = audit.transitions(store, "taxi")
    assert [r["event"] for r in rows] == [
        "staged_stable", "staged_canary", "promoted"]
    assert [r["pushed_model_artifact_id"] for r in rows] == [
        None, artifact_id, artifact_id]
    assert rows[2]["reason"] == "metrics fine"
    assert rows[1]["metrics"] == {"auc": 0.91}
    assert audit.transitions(store, "fraud") == []

    [execution] = store.get_executions_by_id([exec_id])
    assert execution.last_known_state == metadata_store_pb2.Execution.COMPLETE
    assert execution.properties["event"].string_value == "promoted"
    assert execution.properties["actor"].string_value == "alice@laptop"
    assert execution.properties["stable_version"].int_value == 2
    assert "canary_version" not in execution.properties
    assert execution.properties["traffic_percent"].int_value == 0
    assert json.loads(
        execution.custom_properties["metrics_json"].string_value) == {}
    [context] = store.get_contexts_by_execution(exec_id)
    assert context.name == "rollout.taxi"
    [context_type] = store.get_context_types_by_id([context.type_id])
    assert context_type.name == "tfx_canary.Rollout"
    [execution_type] = store.get_execution_types_by_id([execution.type_id])
    assert execution_type.name == "tfx_canary.RolloutTransition"
    [event] = store.get_events_by_execution_ids([exec_id])
    assert event.type == metadata_store_pb2.Event.INPUT
    assert event.artifact_id == artifact_id
    # The pushed model is attributed to the rollout context too.
    linked = store.get_artifacts_by_context(context.id)
    assert [a.id for a in linked] == [artifact_id]
