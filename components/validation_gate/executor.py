"""ValidationGate executor: fail the run when ExampleValidator found blocking anomalies."""
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from common import tfx_outputs
from common.errors import TfxCanaryError
from components.validation_gate import anomalies as anomalies_lib


class BlockingAnomaliesError(TfxCanaryError):
    """The span's data does not match the schema; training would be unsafe."""


def load_anomalies(anomalies_artifact):
    """{split: Anomalies proto} from an ExampleValidator output artifact.

    Every split the artifact declares must have its anomalies file: a gate that
    cannot read one must not pass the run.
    """
    result = {}
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        split_dir = artifact_utils.get_split_uri([anomalies_artifact], split)
        found = tfx_outputs.read_anomalies(split_dir)
        if found is None:
            raise TfxCanaryError('ExampleValidator output %s has no %s for split %r: re-run '
                                 'ExampleValidator (--no-cache)'
                                 % (split_dir, tfx_outputs.ANOMALIES_FILE, split))
        result[split] = found
    return result


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict, output_dict, exec_properties):
        allowed = [a for a in (exec_properties.get('allowed_anomalies') or '').split(',') if a]
        blocking = {}
        for artifact in input_dict['anomalies']:
            for split, proto in load_anomalies(artifact).items():
                found = anomalies_lib.blocking_anomalies(proto, allowed)
                if found:
                    blocking[split] = found
        if blocking:
            raise BlockingAnomaliesError(anomalies_lib.describe(blocking))
