"""SpanRangeDriver: TFX's FileBasedDriver, extended to span ranges.

LocalDagRunner runs a component's driver before the cache lookup and folds the
exec properties and output artifact it returns into the cache key. For a span
range this driver resolves every span A..B (resolve.resolve_span_range), so
the key holds every span's input fingerprint: a change to any span's files
re-runs ExampleGen, an unchanged range hits the cache. Without `span_range` it
is TFX's FileBasedDriver unchanged.

KFP and Vertex do not run custom drivers (Vertex runs TFX's stock ExampleGen
driver hook, which resolves span B alone); components/span_example_gen/executor.py
completes the resolution there.
"""
from tfx.components.example_gen import driver
from tfx.types import standard_component_specs

from components.span_example_gen import resolve


class SpanRangeDriver(driver.FileBasedDriver):

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        if not exec_properties.get(resolve.SPAN_RANGE_KEY):
            return super().resolve_exec_properties(exec_properties, pipeline_info, component_info)
        resolved = resolve.resolve_span_range(exec_properties)
        exec_properties.update(resolved)  # In place, as TFX's driver does.
        return exec_properties

    def run(self, execution_info):
        result = super().run(execution_info)
        if execution_info.exec_properties.get(resolve.SPAN_RANGE_KEY):
            for artifact in result.output_artifacts[standard_component_specs.EXAMPLES_KEY].artifacts:
                resolve.update_output_artifact(execution_info.exec_properties, artifact)
        return result
