"""Which anomalies block a run, and the message the user sees."""
import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.validation_gate import anomalies as gate

ERROR = anomalies_pb2.AnomalyInfo.ERROR
WARNING = anomalies_pb2.AnomalyInfo.WARNING


def _anomalies(**by_feature):
    a = anomalies_pb2.Anomalies()
    for feature, (severity, short) in by_feature.items():
        info = a.anomaly_info[feature]
        info.severity, info.short_description, info.description = severity, short, short + ' details'
    return a


def test_errors_block_and_warnings_do_not():
    a = _anomalies(payment_type=(ERROR, 'Unexpected string values'), fare=(WARNING, 'Drift'))
    assert gate.blocking_anomalies(a) == [
        ('payment_type', 'Unexpected string values', 'Unexpected string values details')]


def test_allowed_by_feature_or_short_description():
    a = _anomalies(payment_type=(ERROR, 'Unexpected string values'), company=(ERROR, 'Column dropped'))
    assert gate.blocking_anomalies(a, allowed=['company', 'Unexpected string values']) == []


def test_no_anomalies_nothing_blocks():
    assert gate.blocking_anomalies(anomalies_pb2.Anomalies()) == []


def test_message_names_split_feature_and_fix():
    msg = gate.describe({'train': [('company', 'Column dropped', 'The feature was present in fewer examples')]})
    assert "split 'train', feature 'company': Column dropped" in msg
    assert 'nothing was trained or pushed' in msg and 'schema' in msg


def _anomalies_artifact(tmp_path, splits, written):
    from tfx.types import artifact_utils, standard_artifacts
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path)
    artifact.split_names = artifact_utils.encode_split_names(list(splits))
    for split in written:
        (tmp_path / ('Split-' + split)).mkdir()
        (tmp_path / ('Split-' + split) / 'SchemaDiff.pb').write_bytes(
            _anomalies(fare=(ERROR, 'Out-of-range values')).SerializeToString())
    return artifact


def test_the_gate_reads_every_declared_split(tmp_path):
    from components.validation_gate import executor
    loaded = executor.load_anomalies(_anomalies_artifact(tmp_path, ['train', 'eval'],
                                                         ['train', 'eval']))
    assert sorted(loaded) == ['eval', 'train']
    assert gate.blocking_anomalies(loaded['eval'])[0][:2] == ('fare', 'Out-of-range values')


def test_a_split_without_its_anomalies_file_stops_the_gate(tmp_path):
    from common.errors import TfxCanaryError
    from components.validation_gate import executor
    with pytest.raises(TfxCanaryError, match=r"no SchemaDiff.pb for split 'eval'"):
        executor.load_anomalies(_anomalies_artifact(tmp_path, ['train', 'eval'], ['train']))
