"""BaselineModel: the model now serving, as a Model artifact, with no resolver node.

Replaces `tfx.dsl.Resolver(LatestBlessedModelStrategy)` so the pipeline also
compiles for open-source KFP, whose backend runs only container and importer
executors ("resolver not implemented yet"). A plain container step reads
`<serving_root>/<model_name>/rollout.json` at run time and emits:

  * the stable version's SavedModel copied into `<uri>/Format-Serving/`, so
    Evaluator (`baseline_model`) and Trainer (`base_model`) read it as any
    Trainer output; custom properties has_baseline=1, baseline_version,
    baseline_source, baseline_uri, baseline_fingerprint;
  * or, before anything serves, an empty artifact with has_baseline=0 that
    BaselineAwareEvaluator / baseline_trainer_executor_spec() drop;
  * `statistics`: the statistics of the data the stable version was trained
    on (staged beside it by CanaryPusher), for the drift gate; empty with
    has_statistics=0 when there are none (see statistics.py).

Wiring (same node feeds both):

    baseline = create_baseline_component(config)
    trainer = tfx.components.Trainer(..., base_model=baseline.outputs['model'],
                                     custom_executor_spec=baseline_trainer_executor_spec())
    evaluator = BaselineAwareEvaluator(..., baseline_model=baseline.outputs['model'])
"""
from tfx import types
from tfx.components.evaluator import component as evaluator_component
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.baseline import driver, executor

# The node id both Trainer.base_model and Evaluator.baseline_model consume.
BASELINE_NODE_ID = 'BaselineModel'


class BaselineModelSpec(types.ComponentSpec):
    PARAMETERS = {
        'serving_root': ExecutionParameter(type=str),
        'model_name': ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {
        'model': ChannelParameter(type=standard_artifacts.Model),
        'statistics': ChannelParameter(type=standard_artifacts.ExampleStatistics),
    }


class BaselineModel(base_component.BaseComponent):
    SPEC_CLASS = BaselineModelSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
    # LocalDagRunner only; KFP/Vertex ignore custom drivers (see driver.py).
    DRIVER_CLASS = driver.BaselineDriver

    def __init__(self, serving_root: str, model_name: str):
        super().__init__(spec=BaselineModelSpec(
            serving_root=serving_root, model_name=model_name,
            model=types.Channel(type=standard_artifacts.Model),
            statistics=types.Channel(type=standard_artifacts.ExampleStatistics)))


class BaselineAwareEvaluator(evaluator_component.Evaluator):
    """tfx.components.Evaluator whose executor drops an empty baseline and
    records the baseline it used on its evaluation and blessing."""
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.BaselineAwareEvaluatorExecutor)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Keep the stock node id: run summaries, lineage queries and the local
        # cache context are keyed by it.
        self.with_id('Evaluator')


def baseline_trainer_executor_spec():
    """custom_executor_spec for tfx.components.Trainer that drops an empty base_model."""
    return executor_spec.ExecutorClassSpec(executor.BaselineAwareTrainerExecutor)


def create_baseline_component(config) -> BaselineModel:
    """The BaselineModel node for a PipelineConfig (serving root and model name)."""
    return BaselineModel(serving_root=config.serving_root,
                         model_name=config.model_name).with_id(BASELINE_NODE_ID)
