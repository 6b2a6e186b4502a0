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

from components.canary_pusher import staged
from modules import model as model_lib
from pipeline.eval_results import overall_metrics
from rollout import staging
from rollout.control import RolloutController

REQUIRED_SIGNATURES = (model_lib.SERVING_SIGNATURE, model_lib.RAW_SIGNATURE)


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
        model_push.set_string_custom_property('model_name', model_name)
        if not self.CheckBlessing(input_dict):
            # Not blessed: record it on the artifact (ML Metadata) and touch nothing on disk.
            self._MarkNotPushed(model_push)  # noqa: keeps TFX's pushed=0 convention
            return

        serving_root = exec_properties['serving_root']
        controller = RolloutController(
            serving_root, model_name,
            storage_uri_prefix=exec_properties.get('kserve_storage_uri_prefix') or None,
            tf_serving_root=exec_properties.get('tf_serving_root') or None)
        model_path = self.GetModelPath(input_dict)
        before = controller.status()

        version = staged.already_serving(model_path, controller.serving_root, model_name,
                                         [before.get('canary'), before.get('stable')])
        if version is not None:
            logging.info('CanaryPusher: %s is already staged as version %d; not staging again',
                          model_path, version)
            role = 'stable' if version == before.get('stable') else 'canary'
            challenged = before.get('stable') if role == 'canary' else None
        else:
            result = controller.stage(
                model_path,
                canary_percent=exec_properties['canary_traffic_percent'],
                validate=functools.partial(staging.validate_saved_model,
                                           required_signatures=REQUIRED_SIGNATURES),
                reason='blessed by Evaluator',
                metrics=_candidate_metrics(input_dict),
                keep=exec_properties['keep_versions'])
            version = result['version']
            role = 'stable' if result['after']['stable'] == version else 'canary'
            challenged = result['before']['stable'] if role == 'canary' else None

        destination = os.path.join(controller.serving_root, model_name, str(version))
        self._MarkPushed(model_push, pushed_destination=destination, pushed_version=str(version))
        model_push.set_string_custom_property('rollout_role', role)
        model_push.set_int_custom_property('challenges_stable_version', challenged or 0)
        model_push.set_string_custom_property('serving_root', controller.serving_root)
        logging.info('CanaryPusher: %s staged as version %d (%s)', model_path, version, role)
