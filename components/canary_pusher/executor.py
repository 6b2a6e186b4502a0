"""CanaryPusher executor: stage a blessed model as the next numbered version.

Builds on the stock Pusher executor for the blessing checks (model and infra
blessing) and the `pushed` / `pushed_destination` / `pushed_version`
properties every TFX tool reads; the staging itself goes through
rollout.control.RolloutController (atomic copy, lock, validation, config files).
"""
import functools
import os

from absl import logging
from tfx.components.pusher import executor as pusher_executor
from tfx.types import artifact_utils

# The PushedModel's custom properties (read by runners/summary.py and lineage).
from common.mlmd_names import (CHALLENGES_STABLE_VERSION, MODEL_NAME, NOT_PUSHED_REASON,
                               ROLLOUT_ROLE, SERVING_ROOT, STALE_BASELINE)
from components.baseline import resolve
from components.baseline import statistics as baseline_statistics
from components.canary_pusher import staged
from common.tfx_outputs import overall_metrics
from rollout import control
from rollout import staging
from rollout import training_data
from rollout.errors import StaleBaselineError

# What the bundled model code exports; pipelines pass PipelineConfig.signatures.
DEFAULT_SIGNATURES = ('serving_default', 'predict_raw')


def required_signatures(exec_properties):
    names = [n for n in (exec_properties.get('required_signatures') or '').split(',') if n]
    return tuple(names) or DEFAULT_SIGNATURES



def judged_stable(input_dict):
    """The stable version the Evaluator judged the model against.

    None = "nothing served" (a first model); control.ANY_STABLE when the
    blessing does not say (a blessing from a stock Evaluator), which skips the
    compare-and-set rather than refusing every push.
    """
    blessing = artifact_utils.get_single_instance(input_dict['model_blessing'])
    if not blessing.has_custom_property(resolve.HAS_BASELINE):
        return control.ANY_STABLE
    if blessing.get_int_custom_property(resolve.HAS_BASELINE) != 1:
        return None
    if not blessing.has_custom_property(resolve.BASELINE_VERSION):
        return control.ANY_STABLE
    return blessing.get_int_custom_property(resolve.BASELINE_VERSION) or None


def _training_data(input_dict):
    """The statistics and schema the model was trained on, if wired in."""
    statistics = input_dict.get('statistics') or []
    if not statistics:
        return None
    artifact = artifact_utils.get_single_instance(statistics)
    schemas = input_dict.get('schema') or []
    schema_file = None
    if schemas:
        from tfx.utils import io_utils
        schema_file = io_utils.get_only_uri_in_dir(
            artifact_utils.get_single_uri(schemas))
    examples = (input_dict.get('examples') or [None])[0]
    return training_data.TrainingData(statistics_dir=artifact.uri, schema_file=schema_file,
                                      span=baseline_statistics.span_words(examples))


def _candidate_metrics(input_dict):
    evaluations = input_dict.get('model_evaluation') or []
    if not evaluations:
        return {}
    try:
        return overall_metrics(artifact_utils.get_single_instance(evaluations).uri).get('candidate', {})
    except Exception as e:  # pylint: disable=broad-except
        logging.warning('CanaryPusher: cannot read evaluation metrics: %s', e)
        return {}


class Executor(pusher_executor.Executor):

    def Do(self, input_dict, output_dict, exec_properties):
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict['pushed_model'])
        model_name = exec_properties['model_name']
        model_push.set_string_custom_property(MODEL_NAME, model_name)
        if not self.CheckBlessing(input_dict):
            # Not blessed: record it on the artifact (ML Metadata) and touch nothing on disk.
            self._MarkNotPushed(model_push)  # noqa: keeps TFX's pushed=0 convention
            return
        controller = control.RolloutController(
            exec_properties['serving_root'], model_name,
            storage_uri_prefix=exec_properties.get('kserve_storage_uri_prefix') or None,
            tf_serving_root=exec_properties.get('tf_serving_root') or None)
        model_push.set_string_custom_property(SERVING_ROOT, controller.serving_root)
        model_path = self.GetModelPath(input_dict)
        try:
            version, role, challenged = self._push(controller, model_path, input_dict,
                                                   exec_properties)
        except StaleBaselineError as e:
            self._mark_stale(model_push, str(e))
            if exec_properties.get('fail_on_stale_baseline'):
                # On Kubeflow the task's failure is what the run status shows;
                # locally the runner reads the artifact and sets the exit status.
                raise
            return
        destination = os.path.join(controller.serving_root, model_name, str(version))
        self._MarkPushed(model_push, pushed_destination=destination, pushed_version=str(version))
        model_push.set_string_custom_property(ROLLOUT_ROLE, role)
        model_push.set_int_custom_property(CHALLENGES_STABLE_VERSION, challenged or 0)
        logging.info('CanaryPusher: %s staged as version %d (%s)', model_path, version, role)

    def _push(self, controller, model_path, input_dict, exec_properties):
        """Stages the model unless it already serves; returns (version, role, challenged)."""
        before = controller.load()
        version = staged.already_serving(
            model_path, controller.serving_root, controller.model_name,
            [before.canary_version, before.stable_version])
        if version is not None:
            logging.info('CanaryPusher: %s is already staged as version %d; not staging again',
                         model_path, version)
            role = 'stable' if version == before.stable_version else 'canary'
            return version, role, before.stable_version if role == 'canary' else None
        result = controller.stage(
            model_path,
            canary_percent=exec_properties['canary_traffic_percent'],
            validate=functools.partial(staging.validate_saved_model,
                                       required_signatures=required_signatures(exec_properties)),
            reason='blessed by Evaluator',
            metrics=_candidate_metrics(input_dict),
            keep=exec_properties['keep_versions'],
            expect_stable=judged_stable(input_dict),
            training_data=_training_data(input_dict))
        version = result.version
        role = 'stable' if result.after.stable == version else 'canary'
        return version, role, result.before.stable if role == 'canary' else None

    def _mark_stale(self, model_push, reason):
        """Blessed, but against a baseline that no longer serves: record, stage nothing."""
        self._MarkNotPushed(model_push)
        model_push.set_string_custom_property(NOT_PUSHED_REASON, reason)
        model_push.set_int_custom_property(STALE_BASELINE, 1)
        logging.warning('CanaryPusher: %s', reason)
