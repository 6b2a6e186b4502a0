"""Shared fixtures for the KFP / Vertex tests: real kfp SDK, real TFX compile."""
import json

import pytest
import yaml

from pipeline.configs import PipelineConfig
from pipeline.kubeflow_configs import KubeflowConfig
from runners import kubeflow_runner

def kfp_config(**overrides):
    values = dict(target='kfp', image='registry.example/ml/tfx-canary:1.0',
                  pipeline_root='gs://bucket/tfx-canary', serving_pvc='serving')
    values.update(overrides)
    return KubeflowConfig(**values)


def vertex_config(**overrides):
    values = dict(target='vertex', image='europe-docker.pkg.dev/p/ml/tfx-canary:1.0',
                  pipeline_root='gs://bucket/tfx-canary', serving_root='/gcs/bucket/serving')
    values.update(overrides)
    return KubeflowConfig(**values)


# Compiled once per session: the real TFX compile, read back from disk.

@pytest.fixture(scope='session')
def kfp_package(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('kfp') / 'pipeline.yaml')
    kubeflow_runner.compile_pipeline(
        PipelineConfig(), kfp_config(gpu_count=2, gpu_node_selector={'pool': 'gpu'}), path)
    return path


@pytest.fixture(scope='session')
def kfp_docs(kfp_package):
    with open(kfp_package) as f:
        return list(yaml.safe_load_all(f))


@pytest.fixture(scope='session')
def spec(kfp_docs):
    """The compiled KFP PipelineSpec (first YAML document), as a dict."""
    return kfp_docs[0]


@pytest.fixture(scope='session')
def vertex_job(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('vertex') / 'pipeline.json')
    kubeflow_runner.compile_pipeline(PipelineConfig(span=2), vertex_config(), path)
    with open(path) as f:
        return json.load(f)
