"""The one SQLite connection builder and the one property reader (real SQLite MLMD)."""
import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from common import mlmd


def test_create_read_write_and_read_only_stores(tmp_path):
    path = tmp_path / 'new' / 'metadata.sqlite'
    with pytest.raises(Exception):   # READ_WRITE never creates: a typo must not fork the store.
        metadata_store.MetadataStore(mlmd.sqlite_config(path, mlmd.READ_WRITE))
    assert not path.exists()
    store = metadata_store.MetadataStore(mlmd.sqlite_config(path, mlmd.CREATE))
    store.put_artifact_type(metadata_store_pb2.ArtifactType(name='Written'))
    writer = metadata_store.MetadataStore(mlmd.sqlite_config(path, mlmd.READ_WRITE))
    writer.put_artifact_type(metadata_store_pb2.ArtifactType(name='AlsoWritten'))
    reader = metadata_store.MetadataStore(mlmd.sqlite_config(path))
    assert {t.name for t in reader.get_artifact_types()} == {'Written', 'AlsoWritten'}
    with pytest.raises(Exception):
        reader.put_artifact_type(metadata_store_pb2.ArtifactType(name='Refused'))
    assert 'Refused' not in {t.name for t in writer.get_artifact_types()}


def test_value_of_reads_properties_then_custom_properties():
    artifact = metadata_store_pb2.Artifact()
    artifact.properties['span'].int_value = 2
    artifact.custom_properties['span'].int_value = 9
    artifact.custom_properties['pushed_version'].string_value = '3'
    artifact.custom_properties['config'].struct_value.update({'a': 1})
    artifact.custom_properties['unset']   # a value with no kind
    assert mlmd.value_of(artifact, 'span') == 2
    assert mlmd.value_of(artifact, 'pushed_version') == '3'
    assert mlmd.value_of(artifact, 'config') == {'a': 1}
    assert mlmd.value_of(artifact, 'unset') is None
    assert mlmd.value_of(artifact, 'missing') is None


def test_event_role_and_direction():
    event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.DECLARED_OUTPUT)
    event.path.steps.add().key = 'pushed_model'
    assert (mlmd.event_role(event), mlmd.is_output(event)) == ('pushed_model', True)
    internal = metadata_store_pb2.Event(type=metadata_store_pb2.Event.INTERNAL_OUTPUT)
    assert (mlmd.event_role(internal), mlmd.is_output(internal)) == ('', False)
