"""ValidationGate: a TFX component that stops the run on blocking data anomalies.

ExampleValidator records anomalies but never fails; Transform and Trainer do
not read its output. This gate sits between them (Transform depends on it), so
a span that breaks the schema stops the run before any training or pushing.
"""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.validation_gate import executor


class ValidationGateSpec(types.ComponentSpec):
    PARAMETERS = {
        # Comma-separated feature names or anomaly short descriptions to accept.
        'allowed_anomalies': ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        'anomalies': ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }
    OUTPUTS = {}


class ValidationGate(base_component.BaseComponent):
    SPEC_CLASS = ValidationGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, anomalies, allowed_anomalies=()):
        super().__init__(spec=ValidationGateSpec(
            anomalies=anomalies, allowed_anomalies=','.join(allowed_anomalies)))
