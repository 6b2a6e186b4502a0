"""PipelineConfig validation: bad values raise a ConfigError naming the field."""
import dataclasses
import os

import pytest

from pipeline.configs import ConfigError, PipelineConfig


def test_defaults_are_valid_and_local():
    c = PipelineConfig().validate()
    assert c.metadata_path.endswith('metadata.sqlite') and c.run_fn == 'modules.model.run_fn'
    assert c.beam_args is None  # Chosen by input size at run time.


def test_derived_paths_follow_workspace_unless_overridden():
    c = PipelineConfig(workspace='/w', serving_root_override='/srv')
    assert c.pipeline_root == '/w/pipeline' and c.serving_root == '/srv'


@pytest.mark.parametrize('field,value,message', [
    ('pipeline_name', 'bad name!', 'pipeline_name'),
    ('model_name', '', 'model_name'),
    ('span_pattern', 'span-*/x.csv', '{SPAN}'),
    ('span', -1, 'span'),
    ('train_steps', 0, 'train_steps'),
    ('eval_steps', 2.5, 'eval_steps'),
    ('min_auc', 1.5, 'min_auc'),
    ('max_auc_regression', -0.1, 'max_auc_regression'),
    ('canary_traffic_percent', 101, 'canary_traffic_percent'),
    ('keep_versions', 0, 'keep_versions'),
    ('keep_versions', True, 'keep_versions'),
    ('train_eval_hash_buckets', (3, 0), 'train_eval_hash_buckets'),
    ('hparams', {'no_such_knob': 1}, 'no_such_knob'),
])
def test_bad_values_raise_clear_errors(field, value, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(PipelineConfig(), **{field: value}).validate()


def test_hparam_assignments_parse_json_values():
    from modules.hparams import parse_assignment
    assert parse_assignment('warm_start=false') == ('warm_start', False)
    assert parse_assignment('hidden_units=[16,8]') == ('hidden_units', [16, 8])
    assert parse_assignment('name=abc') == ('name', 'abc')
    with pytest.raises(ValueError, match='KEY=VALUE'):
        parse_assignment('oops')


def test_beam_mode_follows_input_size():
    from pipeline.configs import beam_args_for
    assert '--direct_running_mode=in_memory' in beam_args_for(2 * 2 ** 20)
    big = beam_args_for(500 * 2 ** 20, cpus=2)
    assert '--direct_running_mode=multi_processing' in big and '--direct_num_workers=2' in big


@pytest.mark.parametrize('input_bytes', [2 * 2 ** 20, 500 * 2 ** 20])
def test_local_beam_args_stop_tfx_building_its_own_sdist(input_bytes):
    """TFX's Beam executors pass these args through make_beam_dependency_flags,
    which otherwise copies the installed tfx tree and runs `setup.py sdist`
    (per component, every run) for remote workers the DirectRunner never has."""
    from tfx.utils import dependency_utils
    from pipeline.configs import beam_args_for
    args = list(beam_args_for(input_bytes, cpus=2))
    assert dependency_utils.make_beam_dependency_flags(args) == args
    setup_file = [a for a in args if a.startswith('--setup_file=')][0].split('=', 1)[1]
    assert os.path.isfile(setup_file)


def test_the_default_signatures_are_the_ones_the_model_code_exports():
    from modules import model as model_lib
    from pipeline import pipeline as pipeline_lib
    config = PipelineConfig(workspace='/tmp/ws')
    assert config.signatures == (model_lib.SERVING_SIGNATURE, model_lib.RAW_SIGNATURE)
    pusher = next(c for c in pipeline_lib.create_pipeline(config).components
                  if c.id == 'CanaryPusher')
    assert pusher.exec_properties['required_signatures'] == 'serving_default,predict_raw'


def test_keep_versions_has_the_rollout_librarys_minimum():
    """One minimum everywhere: keep=1 is valid (stable and canary are never pruned)."""
    from rollout import staging
    assert PipelineConfig(keep_versions=staging.MIN_KEEP_VERSIONS).validate()
    assert staging.check_keep(staging.MIN_KEEP_VERSIONS) == 1
