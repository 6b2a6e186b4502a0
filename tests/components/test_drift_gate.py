"""The real DriftGate executor on real TFDV statistics of the bundled spans.

What a user relies on: the bundled spans pass; a span with one rescaled
numeric feature, a shifted categorical feature or a shifted label is stopped
with one line per drifted feature (distance, threshold, both spans);
--allow-drift accepts an expected change; the thresholds are the schema's;
a first model (no baseline statistics) passes with a note.
"""
import os
import shutil

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import standard_artifacts

from components.baseline import statistics as baseline_statistics
from components.drift_gate import executor as gate_executor
from tests.components.conftest import examples_artifact, span_statistics, statistics_artifact
from tests.conftest import SCHEMA_PATH

COMPARED = ['company', 'fare', 'payment_type', 'tips', 'trip_miles', 'trip_start_hour']


def _rescale_miles(frame):
    frame['trip_miles'] = frame['trip_miles'] * 1000     # e.g. an upstream unit bug


def _all_cash(frame):
    frame['payment_type'] = 'Cash'


def _tips_tripled(frame):
    frame['tips'] = frame['tips'] * 3                    # the label moves with tips


@pytest.fixture(scope='module')
def drifted():
    return {'trip_miles': span_statistics(2, _rescale_miles),
            'payment_type': span_statistics(2, _all_cash),
            'tips': span_statistics(2, _tips_tripled)}


@pytest.fixture
def gate(tmp_path):
    """gate(current, baseline, allowed=(), schema=SCHEMA_PATH) -> the drift output artifact."""
    counter = iter(range(1000))

    def run(current, baseline, allowed=(), schema=SCHEMA_PATH, examples=None):
        n = next(counter)
        schema_dir = tmp_path / ('schema-%d' % n)
        os.makedirs(schema_dir)
        shutil.copy(schema, schema_dir / 'schema.pbtxt')
        schema_artifact = standard_artifacts.Schema()
        schema_artifact.uri = str(schema_dir)
        drift = standard_artifacts.ExampleAnomalies()
        drift.uri = str(tmp_path / ('drift-%d' % n))
        exec_properties = {'allowed_drift': ','.join(allowed)}
        gate_executor.Executor().Do(
            {'statistics': [current], 'baseline_statistics': [baseline],
             'schema': [schema_artifact],
             'examples': [examples or examples_artifact(tmp_path / 'examples', current.span)]},
            {'drift': [drift]}, exec_properties)
        return drift

    return run


def _current(tmp_path, statistics, span=2):
    return statistics_artifact(tmp_path / 'current', statistics, span)


def _baseline(tmp_path, statistics, span=1, version=1):
    return statistics_artifact(
        tmp_path / 'baseline', statistics, span, **{
            baseline_statistics.HAS_STATISTICS: 1,
            baseline_statistics.STATISTICS_VERSION: version,
            baseline_statistics.STATISTICS_SPAN: 'span %d' % span})


def _recorded_distances(drift):
    with open(os.path.join(drift.uri, 'Split-train', gate_executor.ANOMALIES_FILE), 'rb') as f:
        anomalies = anomalies_pb2.Anomalies.FromString(f.read())
    return {'.'.join(i.path.step): i.drift_measurements[0].value for i in anomalies.drift_skew_info}


@pytest.mark.parametrize('new, old', [(2, 1), (3, 2)])
def test_the_bundled_spans_pass_and_every_compared_feature_is_recorded(
        gate, tmp_path, bundled_statistics, new, old):
    drift = gate(_current(tmp_path, bundled_statistics[new], new),
                 _baseline(tmp_path, bundled_statistics[old], old))
    assert drift.get_int_custom_property(gate_executor.DRIFT_CHECKED) == 1
    assert drift.get_string_custom_property(gate_executor.DRIFTED_FEATURES) == ''
    distances = _recorded_distances(drift)
    assert sorted(distances) == COMPARED          # the label's source column included
    assert all(0 <= d < 0.2 for d in distances.values()), distances
    assert drift.get_string_custom_property(gate_executor.DRIFT_BASELINE) == (
        'span %d, the data stable v1 was trained on' % old)


@pytest.mark.parametrize('feature, measure', [('trip_miles', 'Jensen-Shannon divergence'),
                                              ('payment_type', 'L-infinity distance'),
                                              ('tips', 'Jensen-Shannon divergence')])
def test_a_drifted_feature_stops_the_run_with_one_line_naming_it(
        gate, tmp_path, bundled_statistics, drifted, feature, measure):
    with pytest.raises(gate_executor.DataDriftError) as raised:
        gate(_current(tmp_path, drifted[feature]), _baseline(tmp_path, bundled_statistics[1]))
    lines = str(raised.value).splitlines()
    assert lines[0].startswith('data drift: span 2 is too far from span 1, the data stable v1 '
                               'was trained on; nothing was trained or pushed')
    assert '--allow-drift FEATURE' in lines[0]
    assert len(lines) == 2                        # only the drifted feature, one line
    assert lines[1].startswith("  feature '%s': %s " % (feature, measure))
    distance = float(lines[1].split(measure)[1].split(',')[0])
    threshold = 0.25 if feature == "tips" else 0.2
    assert distance > threshold and lines[1].endswith("threshold %.2f: DRIFTED" % threshold)


def test_allow_drift_accepts_an_expected_change_and_records_it(
        gate, tmp_path, bundled_statistics, drifted):
    drift = gate(_current(tmp_path, drifted['trip_miles']),
                 _baseline(tmp_path, bundled_statistics[1]), allowed=('trip_miles',))
    assert drift.get_string_custom_property(gate_executor.DRIFTED_FEATURES) == 'trip_miles'
    assert _recorded_distances(drift)['trip_miles'] > 0.2


def test_allow_drift_of_a_feature_the_schema_does_not_compare_is_an_error(
        gate, tmp_path, bundled_statistics):
    with pytest.raises(gate_executor.DataDriftError, match=r"allowed_drift names trip_mile,.*"
                                                           r"features compared: company, fare"):
        gate(_current(tmp_path, bundled_statistics[2]), _baseline(tmp_path, bundled_statistics[1]),
             allowed=('trip_mile',))


def test_the_thresholds_are_the_schemas(gate, tmp_path, bundled_statistics, drifted):
    with open(SCHEMA_PATH) as f:
        text = f.read()
    # Loosen every Jensen-Shannon threshold: the rescaled span now passes.
    looser = tmp_path / 'looser.pbtxt'
    looser.write_text(text.replace('threshold: 0.2\n      source', 'threshold: 0.95\n      source'))
    drift = gate(_current(tmp_path, drifted['trip_miles']),
                 _baseline(tmp_path, bundled_statistics[1]), schema=str(looser))
    assert drift.get_string_custom_property(gate_executor.DRIFTED_FEATURES) == ''


def test_a_first_model_passes_with_a_note(gate, tmp_path, drifted):
    empty = statistics_artifact(tmp_path / 'none', None, 0, splits=(), **{
        baseline_statistics.HAS_STATISTICS: 0, baseline_statistics.STATISTICS_VERSION: 0,
        baseline_statistics.STATISTICS_NOTE: 'nothing serves yet'})
    drift = gate(_current(tmp_path, drifted['trip_miles']), empty)
    assert drift.get_int_custom_property(gate_executor.DRIFT_CHECKED) == 0
    assert drift.get_string_custom_property(gate_executor.DRIFT_NOTE) == 'nothing serves yet'


def test_a_span_range_is_named_as_such(gate, tmp_path, bundled_statistics, drifted):
    with pytest.raises(gate_executor.DataDriftError, match='^data drift: spans 2-3 is too far'):
        gate(_current(tmp_path, drifted['trip_miles'], 3), _baseline(tmp_path, bundled_statistics[1]),
             examples=examples_artifact(tmp_path / 'range', 3, span_range='2-3'))
