"""Local driver: resolve the baseline *before* the cache lookup.

LocalDagRunner computes a component's cache key from its inputs and exec
properties. BaselineModel has no inputs and fixed properties, so without help
a run after a promotion would reuse the cached, stale baseline. This driver
runs first and adds the resolved stable version and its SavedModel
fingerprint to the exec properties: the cache hits exactly when the same
model still serves, and then Trainer and Evaluator hit the cache too (same
input artifact). KFP and Vertex ignore custom drivers; there the compiled
task is simply never cached (see runners/kfp_spec.py).
"""
from tfx.dsl.components.base import base_driver
from tfx.orchestration.portable import base_driver as portable_base_driver
from tfx.proto.orchestration import driver_output_pb2

from components.baseline import resolve


class BaselineDriver(base_driver.BaseDriver, portable_base_driver.BaseDriver):
    # Both bases: the DSL insists on the legacy driver type, LocalDagRunner's
    # launcher calls the portable run() below.

    def __init__(self, metadata_handle):
        base_driver.BaseDriver.__init__(self, metadata_handle)
        portable_base_driver.BaseDriver.__init__(self, metadata_handle)

    def run(self, execution_info) -> driver_output_pb2.DriverOutput:
        props = execution_info.exec_properties
        baseline = resolve.stable_baseline(props['serving_root'], props['model_name'])
        output = driver_output_pb2.DriverOutput()
        output.exec_properties[resolve.RESOLVED_VERSION].int_value = (
            baseline.version if baseline else 0)
        output.exec_properties[resolve.RESOLVED_FINGERPRINT].string_value = (
            baseline.fingerprint if baseline else '')
        return output
