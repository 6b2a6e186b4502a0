"""Executors: BaselineModel, and thin Evaluator/Trainer executors that honour it.

BaselineModel always emits one Model artifact, because a KFP task output
always exists. When nothing serves yet that artifact is empty and says so
(`has_baseline=0`); the stock Evaluator would treat any artifact as a
baseline and fail to load it, hence the thin executors below drop it first.
"""
from absl import logging
from tfx.components.evaluator import executor as evaluator_executor
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import path_utils

from components.baseline import resolve
from components.baseline import statistics

OUTPUT_KEY = 'model'
RECORDED = (resolve.HAS_BASELINE, resolve.BASELINE_VERSION, resolve.BASELINE_SOURCE,
            resolve.BASELINE_URI, resolve.BASELINE_FINGERPRINT)


def describe(model_artifact, baseline, source):
    """Records on `model_artifact` which baseline it holds (or that it holds none)."""
    model_artifact.set_int_custom_property(resolve.HAS_BASELINE, 1 if baseline else 0)
    model_artifact.set_int_custom_property(resolve.BASELINE_VERSION,
                                           baseline.version if baseline else 0)
    model_artifact.set_string_custom_property(resolve.BASELINE_SOURCE,
                                              baseline.source if baseline else source)
    model_artifact.set_string_custom_property(resolve.BASELINE_URI,
                                              baseline.model_dir if baseline else '')
    model_artifact.set_string_custom_property(resolve.BASELINE_FINGERPRINT,
                                              baseline.fingerprint if baseline else '')


class Executor(base_executor.BaseExecutor):
    """Copies the stable SavedModel into a Model artifact (or marks it empty)."""

    def Do(self, input_dict, output_dict, exec_properties):
        serving_root = exec_properties['serving_root']
        model_name = exec_properties['model_name']
        model_artifact = artifact_utils.get_single_instance(output_dict[OUTPUT_KEY])
        # The local driver resolved the version before the cache lookup; use
        # that one so the cache key and the copied model agree. On KFP/Vertex
        # there is no driver: resolve here.
        pinned = exec_properties.get(resolve.RESOLVED_VERSION)
        baseline = resolve.stable_baseline(
            serving_root, model_name, None if pinned is None else int(pinned))
        model_artifact.set_string_custom_property('model_name', model_name)
        describe(model_artifact, baseline, resolve.no_baseline_source(serving_root, model_name))
        for statistics_artifact in output_dict.get(statistics.OUTPUT_KEY) or []:
            statistics.emit(statistics_artifact, serving_root, model_name, baseline)
        if baseline is None:
            logging.info('BaselineModel: no stable version of %s yet; the candidate is '
                         'judged on value thresholds only', model_name)
            return
        # A copy, not a pointer: the Model artifact layout (Format-Serving/) is
        # what Evaluator and Trainer read through path_utils, and the copy stays
        # valid for lineage after the staged version is pruned.
        destination = path_utils.serving_model_dir(model_artifact.uri)
        io_utils.copy_dir(baseline.model_dir, destination)
        logging.info('BaselineModel: stable version %d of %s (%s) -> %s',
                     baseline.version, model_name, baseline.model_dir, destination)


def _without_empty_baseline(input_dict, key):
    """input_dict with `key` dropped when its artifacts hold no model."""
    result = dict(input_dict)
    models = resolve.present(result.get(key))
    if models:
        result[key] = models
    else:
        result.pop(key, None)
    return result


class BaselineAwareEvaluatorExecutor(evaluator_executor.Executor):
    """TFX's Evaluator, minus an empty baseline, plus a record of the baseline used.

    With no baseline the stock executor already skips change thresholds
    (rubber stamp) -- it only needs the empty artifact out of the way.
    """

    def Do(self, input_dict, output_dict, exec_properties):
        key = standard_component_specs.BASELINE_MODEL_KEY
        baselines = input_dict.get(key) or []
        super().Do(_without_empty_baseline(input_dict, key), output_dict, exec_properties)
        # Record on the evaluation and the blessing which baseline was used, so
        # lineage answers "blessed against what?" without following inputs.
        baseline = baselines[0] if baselines else None
        for output_key in (standard_component_specs.EVALUATION_KEY,
                           standard_component_specs.BLESSING_KEY):
            for artifact in output_dict.get(output_key) or []:
                record_baseline(artifact, baseline)


def record_baseline(artifact, baseline_artifact):
    """Copies the baseline description onto an output artifact."""
    if baseline_artifact is None or not baseline_artifact.has_custom_property(resolve.HAS_BASELINE):
        used = baseline_artifact is not None
        artifact.set_int_custom_property(resolve.HAS_BASELINE, 1 if used else 0)
        artifact.set_string_custom_property(
            resolve.BASELINE_SOURCE, baseline_artifact.uri if used else 'no baseline input')
        return
    for name in RECORDED:
        if name in (resolve.HAS_BASELINE, resolve.BASELINE_VERSION):
            # The int getter also reads the JSON number a KFP round trip leaves.
            artifact.set_int_custom_property(name, baseline_artifact.get_int_custom_property(name))
        else:
            artifact.set_string_custom_property(name, baseline_artifact.get_string_custom_property(name))


class BaselineAwareTrainerExecutor(trainer_executor.GenericExecutor):
    """TFX's Trainer, minus an empty base model: fn_args.base_model stays None
    on a first run instead of naming a directory that does not exist."""

    def Do(self, input_dict, output_dict, exec_properties):
        key = standard_component_specs.BASE_MODEL_KEY
        super().Do(_without_empty_baseline(input_dict, key), output_dict, exec_properties)
