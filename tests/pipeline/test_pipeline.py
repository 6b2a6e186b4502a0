"""The pipeline has the expected components, wired the expected way."""
import os

import pytest

from components.baseline.component import BASELINE_NODE_ID
from pipeline import pipeline as pipeline_lib
from pipeline.configs import PipelineConfig

EXPECTED = ['CsvExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator',
            'ValidationGate', 'DriftGate', 'Transform', BASELINE_NODE_ID, 'Trainer',
            'Evaluator', 'CanaryPusher']


@pytest.fixture(scope='module')
def built():
    p = pipeline_lib.create_pipeline(PipelineConfig(workspace='/tmp/ws', span=2))
    return p, {c.id: c for c in p.components}


def _producer(component, key):
    return component.inputs[key].producer_component_id


def test_has_every_component(built):
    _, nodes = built
    assert sorted(nodes) == sorted(EXPECTED)


def test_data_flows_through_validation_before_training(built):
    _, n = built
    assert _producer(n['StatisticsGen'], 'examples') == 'CsvExampleGen'
    assert _producer(n['ExampleValidator'], 'statistics') == 'StatisticsGen'
    assert _producer(n['ExampleValidator'], 'schema') == 'ImportSchemaGen'
    assert _producer(n['ValidationGate'], 'anomalies') == 'ExampleValidator'
    # Transform waits for the gate, so blocking anomalies stop the run before it.
    assert 'ValidationGate' in {u.id for u in n['Transform'].upstream_nodes}
    assert _producer(n['Trainer'], 'examples') == 'Transform'
    assert _producer(n['Trainer'], 'transform_graph') == 'Transform'


def test_drift_gate_compares_the_span_with_the_baselines_statistics_before_transform(built):
    _, n = built
    gate = n['DriftGate']
    assert _producer(gate, 'statistics') == 'StatisticsGen'
    assert _producer(gate, 'baseline_statistics') == BASELINE_NODE_ID
    assert _producer(gate, 'schema') == 'ImportSchemaGen'  # Thresholds: its drift_comparators.
    # After the schema checks (their error comes first), before any training.
    assert 'ValidationGate' in {u.id for u in gate.upstream_nodes}
    assert 'DriftGate' in {u.id for u in n['Transform'].upstream_nodes}
    # What a pushed version was trained on is staged beside it: the next baseline.
    assert _producer(n['CanaryPusher'], 'statistics') == 'StatisticsGen'
    assert _producer(n['CanaryPusher'], 'schema') == 'ImportSchemaGen'


def test_allowed_drift_reaches_the_gate():
    p = pipeline_lib.create_pipeline(PipelineConfig(workspace='/tmp/ws',
                                                    allowed_drift=('trip_miles', 'fare')))
    gate = next(c for c in p.components if c.id == 'DriftGate')
    assert gate.exec_properties['allowed_drift'] == 'trip_miles,fare'


def test_evaluator_compares_against_the_baseline_and_gates_the_push(built):
    _, n = built
    assert _producer(n['Evaluator'], 'model') == 'Trainer'
    assert _producer(n['Evaluator'], 'baseline_model') == BASELINE_NODE_ID
    assert _producer(n['CanaryPusher'], 'model_blessing') == 'Evaluator'
    assert _producer(n['Trainer'], 'base_model') == BASELINE_NODE_ID


def test_chosen_span_becomes_a_static_range(built):
    _, n = built
    import json
    rc = json.loads(n['CsvExampleGen'].exec_properties['range_config'])
    assert rc['static_range'] == {'start_span_number': 2, 'end_span_number': 2}


def test_latest_span_by_default():
    p = pipeline_lib.create_pipeline(PipelineConfig(workspace='/tmp/ws'))
    gen = next(c for c in p.components if c.id == 'CsvExampleGen')
    assert not gen.exec_properties.get('range_config')


def test_eval_config_has_thresholds_and_slices():
    import tensorflow_model_analysis as tfma
    config = PipelineConfig(min_auc=0.75, max_auc_regression=0.01)
    ec = pipeline_lib.eval_config(config)
    assert [list(s.feature_keys) for s in ec.slicing_specs] == [[], ['trip_start_hour'], ['payment_type']]
    metrics = {m.class_name: m for m in ec.metrics_specs[0].metrics}
    auc = metrics['AUC'].per_slice_thresholds[0]
    assert auc.threshold.value_threshold.lower_bound.value == 0.75
    assert auc.threshold.change_threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER
    assert auc.threshold.change_threshold.absolute.value == pytest.approx(-0.01)
    assert list(auc.slicing_specs) == [tfma.SlicingSpec()]  # Gate on the overall slice only.
    assert 'BinaryAccuracy' in metrics


def test_beam_args_and_cache_come_from_config():
    p = pipeline_lib.create_pipeline(PipelineConfig(workspace='/tmp/ws', beam_args=('--x=1',),
                                                    enable_cache=False))
    assert p.beam_pipeline_args == ['--x=1'] and not p.enable_cache


def test_model_code_changes_change_the_cache_key(tmp_path, monkeypatch):
    """Editing the model code must re-execute Transform and Trainer, not hit the cache."""
    import shutil
    import sys
    from tests.conftest import PROJECT_ROOT
    pkg = tmp_path / 'mymodels'
    shutil.copytree(os.path.join(PROJECT_ROOT, 'modules'), pkg,
                    ignore=shutil.ignore_patterns('__pycache__'))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = PipelineConfig(workspace='/tmp/ws', module_path='mymodels')
    before = config.module_fingerprint()
    with open(pkg / 'model.py', 'a') as f:
        f.write('\n# a change\n')
    after = config.module_fingerprint()
    assert before != after
    nodes = {c.id: c for c in pipeline_lib.create_pipeline(config).components}
    assert after in nodes['Trainer'].exec_properties['custom_config']
    assert after in nodes['Transform'].exec_properties['custom_config']
    sys.modules.pop('mymodels', None)


def test_evaluator_model_type_is_what_tfma_would_detect_for_the_trainers_model(tmp_path):
    """The eval config states the model type so TFMA skips a detection load of
    each model; the statement must match what detection finds for the model
    run_fn builds, or TFMA would evaluate it through the wrong model loader."""
    from tensorflow_model_analysis.utils import model_util
    from modules import model as model_lib
    path = str(tmp_path / 'model')
    model_lib.build_keras_model().save(path, save_format='tf', save_traces=False)
    spec = pipeline_lib.eval_config(PipelineConfig()).model_specs[0]
    assert spec.model_type == model_util.get_model_type(None, path)
