"""ValidationGate executor: fail the run when ExampleValidator found blocking anomalies."""
import os

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.validation_gate import anomalies as anomalies_lib
from pipeline.errors import TfxCanaryError

ANOMALIES_FILE = 'SchemaDiff.pb'  # What ExampleValidator writes per split.


class BlockingAnomaliesError(TfxCanaryError):
    """The span's data does not match the schema; training would be unsafe."""


def load_anomalies(anomalies_artifact):
    """{split: Anomalies proto} from an ExampleValidator output artifact."""
    result = {}
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies_artifact], split),
                            ANOMALIES_FILE)
        result[split] = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
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
