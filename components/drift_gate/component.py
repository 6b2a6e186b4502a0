"""DriftGate: stops the run when the new span drifted from the data the stable model learned from.

ExampleValidator checks a span against the schema only; it has no previous
statistics, so the schema's drift_comparators are never evaluated. This gate
compares the span's statistics (StatisticsGen) with the stable version's
training statistics (BaselineModel, staged beside that version by
CanaryPusher) using TFDV and the schema's comparators. It runs after
ValidationGate (schema violations are reported first) and before Transform,
so a drifted span is neither trained on nor pushed. A first model (nothing
serves, no baseline statistics) passes with a note.

Not TFX's DistributionValidator: its thresholds live in its own config, not
in the schema's drift_comparators, and it needs baseline statistics to exist
(a first run has none).
"""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.drift_gate import executor


class DriftGateSpec(types.ComponentSpec):
    PARAMETERS = {
        # Comma-separated features whose drift is expected and accepted.
        'allowed_drift': ExecutionParameter(type=str, optional=True),
        # The split compared (both sides); default executor.DEFAULT_SPLIT.
        'split': ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        'statistics': ChannelParameter(type=standard_artifacts.ExampleStatistics),
        'baseline_statistics': ChannelParameter(type=standard_artifacts.ExampleStatistics),
        'schema': ChannelParameter(type=standard_artifacts.Schema),
        # Only for its span number (StatisticsGen does not carry it over).
        'examples': ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {
        # TFDV's Anomalies proto (distances in drift_skew_info) + the verdict
        # as custom properties (see executor.py), for lineage.
        'drift': ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }


class DriftGate(base_component.BaseComponent):
    SPEC_CLASS = DriftGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, statistics, baseline_statistics, schema, examples=None,
                 allowed_drift=(), split=executor.DEFAULT_SPLIT):
        super().__init__(spec=DriftGateSpec(
            statistics=statistics, baseline_statistics=baseline_statistics, schema=schema,
            examples=examples,
            allowed_drift=','.join(allowed_drift), split=split,
            drift=types.Channel(type=standard_artifacts.ExampleAnomalies)))
