"""CanaryPusher: stages every blessed model as a numbered version for canary serving.

Layout written under `serving_root` (what TF Serving and KServe read):
    <serving_root>/models.config                       ModelServerConfig, labels stable/canary
    <serving_root>/<model_name>/<version>/             the SavedModel, versions only grow
    <serving_root>/<model_name>/rollout.json           stable, canary, traffic, history
    <serving_root>/<model_name>/training-data/<version>/  its training statistics + schema
    <serving_root>/<model_name>/kserve/inferenceservice.yaml
The first ever push becomes stable; later ones become the canary at
`canary_traffic_percent`. A model is staged only if the stable version the
Evaluator judged it against still serves (compare-and-set under the rollout
lock); otherwise its PushedModel records pushed=0 and not_pushed_reason. A model that is not blessed changes nothing on disk;
its PushedModel artifact records pushed=0.
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.canary_pusher import executor
from rollout import staging, state


class CanaryPusherSpec(types.ComponentSpec):
    PARAMETERS = {
        'serving_root': ExecutionParameter(type=str),
        'model_name': ExecutionParameter(type=str),
        'canary_traffic_percent': ExecutionParameter(type=int),
        'keep_versions': ExecutionParameter(type=int),
        'tf_serving_root': ExecutionParameter(type=str, optional=True),
        'kserve_storage_uri_prefix': ExecutionParameter(type=str, optional=True),
        # 1: a push refused because the baseline moved fails the execution
        # (Kubeflow, where the task status is the run's outcome); 0: it is
        # recorded on the PushedModel (pushed=0, not_pushed_reason) only.
        'fail_on_stale_baseline': ExecutionParameter(type=int, optional=True),
        # Comma-separated signatures a staged model must have (from
        # PipelineConfig.signatures); default executor.DEFAULT_SIGNATURES.
        'required_signatures': ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        'model': ChannelParameter(type=standard_artifacts.Model),
        'model_blessing': ChannelParameter(type=standard_artifacts.ModelBlessing),
        'infra_blessing': ChannelParameter(type=standard_artifacts.InfraBlessing, optional=True),
        # Optional: its overall metrics are snapshotted into the rollout history.
        'model_evaluation': ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
        # Optional: the training data's statistics and schema, staged beside
        # the version (rollout.training_data) for the next run's drift gate.
        'statistics': ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
        'schema': ChannelParameter(type=standard_artifacts.Schema, optional=True),
        # Only for the span number recorded with the statistics.
        'examples': ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {
        'pushed_model': ChannelParameter(type=standard_artifacts.PushedModel),
    }


class CanaryPusher(base_component.BaseComponent):
    SPEC_CLASS = CanaryPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model, model_blessing, serving_root, model_name,
                 canary_traffic_percent=state.DEFAULT_CANARY_PERCENT,
                 keep_versions=staging.DEFAULT_KEEP_VERSIONS, infra_blessing=None,
                 model_evaluation=None, tf_serving_root: Optional[str] = None,
                 kserve_storage_uri_prefix: Optional[str] = None,
                 fail_on_stale_baseline: bool = False, statistics=None, schema=None,
                 examples=None, required_signatures=executor.DEFAULT_SIGNATURES):
        super().__init__(spec=CanaryPusherSpec(
            model=model, model_blessing=model_blessing, infra_blessing=infra_blessing,
            model_evaluation=model_evaluation, statistics=statistics, schema=schema,
            examples=examples,
            serving_root=serving_root, model_name=model_name,
            canary_traffic_percent=canary_traffic_percent, keep_versions=keep_versions,
            tf_serving_root=tf_serving_root,
            kserve_storage_uri_prefix=kserve_storage_uri_prefix,
            fail_on_stale_baseline=int(bool(fail_on_stale_baseline)),
            required_signatures=','.join(required_signatures),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
