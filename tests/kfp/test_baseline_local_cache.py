"""With LocalDagRunner the BaselineModel is cached exactly while the same model
serves: its driver folds the resolved stable version into the cache key, so
an unchanged rollout reuses the same Model artifact (and downstream steps hit
the cache), while a promotion produces a new baseline."""
import os

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.baseline import component as baseline_component
from components.baseline import resolve
from pipeline.configs import PipelineConfig
from tests.kfp.test_baseline import MODEL, stage


def run_once(workspace):
    from tfx import v1 as tfx
    from tfx.orchestration import metadata

    config = PipelineConfig(workspace=str(workspace), model_name=MODEL)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name='baseline-cache', pipeline_root=config.pipeline_root,
        components=[baseline_component.create_baseline_component(config)], enable_cache=True,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(config.metadata_path))
    tfx.orchestration.LocalDagRunner().run(pipeline)
    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(config.metadata_path))
    execution = max(store.get_executions(), key=lambda e: e.id)
    events = store.get_events_by_execution_ids([execution.id])
    outputs = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    # The Model output (the other one is the baseline's training statistics).
    model_type = store.get_artifact_type('Model').id
    (artifact,) = [a for a in store.get_artifacts_by_id(outputs) if a.type_id == model_type]
    return execution.last_known_state, artifact


def version_of(artifact):
    return artifact.custom_properties[resolve.BASELINE_VERSION].int_value


def test_cache_hits_while_the_same_model_serves_and_misses_after_a_promotion(tmp_path):
    serving = tmp_path / 'serving'
    complete, cached = metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED

    state, first = run_once(tmp_path)                 # nothing serves yet
    assert state == complete and version_of(first) == 0
    state, again = run_once(tmp_path)
    assert state == cached and again.id == first.id   # same artifact -> downstream cache hits

    stage(str(serving), [1], stable=1)                # the first model is staged
    state, staged = run_once(tmp_path)
    assert state == complete and version_of(staged) == 1
    assert os.path.isfile(os.path.join(staged.uri, 'Format-Serving', 'saved_model.pb'))
    state, again = run_once(tmp_path)
    assert state == cached and again.id == staged.id

    stage(str(serving), [1, 2], stable=2)             # a canary got promoted
    state, promoted = run_once(tmp_path)
    assert state == complete and version_of(promoted) == 2
