"""The shared readers of TFMA metrics and TFDV anomalies (fast: no TensorFlow, no pipeline)."""
import struct

import pytest

from common import tfx_outputs


def _write_tfrecords(path, payloads):
    with open(path, 'wb') as f:
        for data in payloads:
            f.write(struct.pack('<Q', len(data)) + b'\0' * 4 + data + b'\0' * 4)


def test_tfrecord_reader(tmp_path):
    path = tmp_path / 'r.tfrecord'
    payloads = [b'first', b'', b'x' * 300]
    _write_tfrecords(path, payloads)
    assert list(tfx_outputs.tfrecords(path)) == payloads
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError):
        list(tfx_outputs.tfrecords(path))


def _metrics_for_slice(slice_key=(), values=()):
    """A TFMA MetricsForSlice: values are (name, model_name, value, weighted, is_diff)."""
    message = tfx_outputs.tfma_class('tensorflow_model_analysis.MetricsForSlice')()
    for column, value in slice_key:
        key = message.slice_key.single_slice_keys.add(column=column)
        if isinstance(value, str):
            key.bytes_value = value.encode()
        else:
            key.int64_value = value
    for name, model, value, weighted, is_diff in values:
        kv = message.metric_keys_and_values.add()
        kv.key.name, kv.key.model_name, kv.key.is_diff = name, model, is_diff
        if weighted:
            kv.key.example_weighted.value = False
        kv.value.double_value.value = value
    return message.SerializeToString()


@pytest.fixture
def evaluation(tmp_path):
    """An Evaluator output folder: candidate vs. baseline, overall and two hour slices."""
    records = [
        _metrics_for_slice((('trip_start_hour', 9),), [('auc', 'candidate', 0.7, True, False)]),
        # The TFMA-computed AUC (example_weighted set) first, then Keras' compiled one.
        _metrics_for_slice((), [('auc', 'candidate', 0.91, True, False),
                                ('auc', 'candidate', 0.5, False, False),
                                ('auc', 'baseline', 0.9, True, False),
                                ('auc', 'candidate', 0.01, True, True)]),
        _metrics_for_slice((('trip_start_hour', 8),), [('auc', 'candidate', 0.8, True, False)]),
    ]
    _write_tfrecords(tmp_path / 'metrics-00000-of-00001.tfrecord', records)
    return str(tmp_path)


def test_overall_metrics_are_the_tfma_values_per_model(evaluation):
    assert tfx_outputs.overall_metrics(evaluation) == {'candidate': {'auc': 0.91},
                                                      'baseline': {'auc': 0.9}}


def test_slice_metrics_come_overall_first_then_by_value(evaluation):
    rows = tfx_outputs.slice_metrics(evaluation)
    assert [r.slice for r in rows] == ['overall', 'trip_start_hour=8', 'trip_start_hour=9']
    assert rows[0].diff == {'auc': 0.01} and rows[1].candidate == {'auc': 0.8}


def test_no_metrics_files_is_no_metrics(tmp_path):
    assert tfx_outputs.slice_metrics(str(tmp_path)) is None
    assert tfx_outputs.overall_metrics(str(tmp_path / 'gone')) == {}


def test_anomalies_are_read_per_split(tmp_path):
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    found = anomalies_pb2.Anomalies()
    found.anomaly_info['fare'].short_description = 'Out-of-range values'
    (tmp_path / 'Split-eval').mkdir()
    (tmp_path / 'Split-eval' / tfx_outputs.ANOMALIES_FILE).write_bytes(found.SerializeToString())
    (tmp_path / 'Split-train').mkdir()   # No file: that split is left out.
    by_split = tfx_outputs.anomalies_by_split(str(tmp_path))
    assert list(by_split) == ['eval']
    assert by_split['eval'].anomaly_info['fare'].short_description == 'Out-of-range values'
    assert tfx_outputs.read_anomalies(str(tmp_path / 'Split-train')) is None
    assert tfx_outputs.anomalies_by_split(str(tmp_path / 'Split-train')) is None
