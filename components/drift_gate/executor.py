"""DriftGate executor: judge the span against the baseline statistics; fail the run on drift."""
import os

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from common import mlmd_names as names
from common.errors import TfxCanaryError
from common.tfx_outputs import ANOMALIES_FILE
from components.baseline import statistics as baseline_statistics
from components.drift_gate import drift
from rollout.training_data import STATISTICS_FILE

DEFAULT_SPLIT = 'train'

# Custom properties of the `drift` output (read by lineage), named in common/mlmd_names.py.
DRIFT_CHECKED = names.DRIFT_CHECKED
DRIFT_SPAN = names.DRIFT_SPAN
DRIFT_BASELINE = names.DRIFT_BASELINE
DRIFTED_FEATURES = names.DRIFTED_FEATURES
DRIFT_NOTE = names.DRIFT_NOTE


class DataDriftError(TfxCanaryError):
    """The span drifted from the data the serving model was trained on."""


def _load_split(artifact, split):
    import tensorflow_data_validation as tfdv
    path = os.path.join(artifact_utils.get_split_uri([artifact], split), STATISTICS_FILE)
    return tfdv.load_stats_binary(path)


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict, output_dict, exec_properties):
        split = exec_properties.get('split') or DEFAULT_SPLIT
        allowed = [a for a in (exec_properties.get('allowed_drift') or '').split(',') if a]
        current = artifact_utils.get_single_instance(input_dict['statistics'])
        baseline = artifact_utils.get_single_instance(input_dict['baseline_statistics'])
        schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(
            artifact_utils.get_single_uri(input_dict['schema'])))
        output = artifact_utils.get_single_instance(output_dict['drift'])
        examples = (input_dict.get('examples') or [None])[0]
        span = baseline_statistics.span_words(examples)
        output.set_string_custom_property(DRIFT_SPAN, span)
        problem = drift.unknown_allowed(allowed, schema)
        if problem:
            raise DataDriftError(problem)
        if not baseline_statistics.has_statistics(baseline):
            self._record_unchecked(output, baseline)
            return
        version = baseline.get_int_custom_property(baseline_statistics.STATISTICS_VERSION)
        against = '%s, the data stable v%d was trained on' % (
            baseline.get_string_custom_property(baseline_statistics.STATISTICS_SPAN), version)
        result, anomalies = drift.compare(
            _load_split(current, split), _load_split(baseline, split), schema,
            span=span, baseline=against, allowed=allowed)
        self._record(output, split, anomalies, result)
        for feature in result.features:
            logging.info('DriftGate: %s', feature.describe())
        if result.blocking:
            raise DataDriftError(result.error_message())

    def _record_unchecked(self, output, baseline):
        note = (baseline.get_string_custom_property(baseline_statistics.STATISTICS_NOTE)
                or 'no baseline statistics')
        output.split_names = artifact_utils.encode_split_names([])
        output.set_int_custom_property(DRIFT_CHECKED, 0)
        output.set_string_custom_property(DRIFT_NOTE, note)
        logging.info('DriftGate: drift not checked: %s', note)

    def _record(self, output, split, anomalies, result):
        output.split_names = artifact_utils.encode_split_names([split])
        io_utils.write_bytes_file(
            os.path.join(artifact_utils.get_split_uri([output], split), ANOMALIES_FILE),
            anomalies.SerializeToString())
        output.set_int_custom_property(DRIFT_CHECKED, 1)
        output.set_string_custom_property(DRIFT_BASELINE, result.baseline)
        output.set_string_custom_property(
            DRIFTED_FEATURES, ','.join(f.feature for f in result.features if f.drifted))
