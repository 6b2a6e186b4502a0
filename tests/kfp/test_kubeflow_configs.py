"""KubeflowConfig: cluster knobs validate with errors naming the field and the fix."""
import dataclasses

import pytest

from pipeline import kubeflow_configs
from pipeline.configs import ConfigError
from tests.kfp.conftest import kfp_config, vertex_config


def test_valid_defaults_per_target():
    assert kfp_config().validate().effective_gpu_type == 'nvidia.com/gpu'
    assert vertex_config().validate().effective_gpu_type == 'NVIDIA_TESLA_T4'
    assert kfp_config(gpu_count=0).validate().effective_gpu_type is None


@pytest.mark.parametrize('overrides,message', [
    (dict(target='argo'), 'target'),
    (dict(image=None), 'image'),
    (dict(image='Not An Image'), 'image'),
    (dict(pipeline_root=None), 'pipeline_root'),
    (dict(serving_pvc=None), '--serving-pvc'),          # local serving root, no shared volume
    (dict(serving_pvc='Bad_Name'), 'serving_pvc'),
    (dict(serving_root='gs://b/serving'), 'serving_pvc'),  # a PVC for a bucket path
    (dict(trainer_cpu='four'), 'trainer_cpu'),
    (dict(beam_memory='8 GB'), 'beam_memory'),
    (dict(default_memory='0'), 'default_memory'),
    (dict(gpu_count=-1), 'gpu_count'),
    (dict(gpu_count=True), 'gpu_count'),
    (dict(gpu_type='NVIDIA_TESLA_T4'), 'Kubernetes resource name'),
    (dict(beam_runner='samza'), 'beam_runner'),
    (dict(beam_args=('runner=x',)), 'beam_args'),
    (dict(beam_args=('--runner=DataflowRunner',)), 'beam_runner'),
    (dict(beam_runner='dataflow', beam_args=('--project=p',)), '--region'),
    (dict(beam_runner='flink'), '--flink_master'),
    (dict(beam_runner='spark'), '--spark_master_url'),
])
def test_bad_kfp_values_raise_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        kfp_config(**overrides).validate()


@pytest.mark.parametrize('overrides,message', [
    (dict(pipeline_root='minio://mlpipeline/root'), 'gs://'),
    (dict(serving_root='/serving'), '/gcs/'),
    (dict(serving_pvc='serving'), 'PVC'),
    (dict(gpu_type='nvidia.com/gpu'), 'accelerator type'),
    (dict(gpu_node_selector={'pool': 'gpu'}), 'only applies to open-source KFP'),
])
def test_bad_vertex_values_raise_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        vertex_config(**overrides).validate()


def test_quantities_convert_like_the_kfp_sdk():
    assert kubeflow_configs.cpu_cores('500m') == 0.5
    assert kubeflow_configs.cpu_cores('4') == 4.0
    assert kubeflow_configs.memory_gigabytes('16G') == 16.0
    assert kubeflow_configs.memory_gigabytes('512Mi') == pytest.approx(0.536870912)


def test_direct_runner_gets_one_worker_per_requested_core():
    assert kfp_config(beam_cpu='4').pipeline_beam_args() == (
        '--direct_running_mode=multi_processing', '--direct_num_workers=4')
    assert kfp_config(beam_cpu='500m').pipeline_beam_args() == (
        '--direct_running_mode=in_memory', '--direct_num_workers=1')


def test_dataflow_runner_args_point_workers_at_the_image():
    config = kfp_config(beam_runner='dataflow', beam_args=(
        '--project=p', '--region=europe-west4', '--temp_location=gs://b/tmp')).validate()
    args = config.pipeline_beam_args()
    assert '--runner=DataflowRunner' in args
    assert '--sdk_container_image=%s' % config.image in args
    assert args[:3] == ('--project=p', '--region=europe-west4', '--temp_location=gs://b/tmp')


def test_flink_runner_runs_workers_in_the_image_unless_told_otherwise():
    args = kfp_config(beam_runner='flink', beam_args=(
        '--flink_master=flink:8081', '--environment_type=EXTERNAL')).validate().pipeline_beam_args()
    assert '--runner=FlinkRunner' in args and '--environment_type=EXTERNAL' in args
    assert not any(a.startswith('--environment_type=DOCKER') for a in args)


def test_trainer_resources_carry_the_gpu():
    r = kfp_config(gpu_count=2).trainer_resources()
    assert (r.cpu, r.memory, r.gpu_count, r.gpu_type) == ('4', '16G', 2, 'nvidia.com/gpu')
    assert kfp_config().beam_resources().gpu_count == 0


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        kfp_config().image = 'x'
