"""CsvExampleGen executor that resolves the span itself when no driver ran.

TFX compiles ExampleGen's driver (span/version resolution, `{SPAN}` pattern
substitution, input fingerprint) into the KFP IR as a `lifecycle.pre_cache_check`
hook. Vertex AI runs that hook; the open-source KFP v2 backend does not (its
Argo compiler and launcher never read `lifecycle`), so the stock executor would
glob the literal pattern `span-{SPAN}/*.csv` and find nothing. This executor
does the driver's work in-process, with TFX's own input processor, whenever the
`span` exec property is missing; where a driver did run it changes nothing.
"""
from absl import logging
from tfx.components.example_gen import driver
from tfx.components.example_gen import input_processor
from tfx.components.example_gen import utils
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.proto import example_gen_pb2
from tfx.proto import range_config_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils


def resolve_span(exec_properties):
    """exec_properties plus span, version, fingerprint and concrete split patterns."""
    props = dict(exec_properties)
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(props[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    range_config = None
    if props.get(standard_component_specs.RANGE_CONFIG_KEY):
        range_config = range_config_pb2.RangeConfig()
        proto_utils.json_to_proto(props[standard_component_specs.RANGE_CONFIG_KEY], range_config)
    processor = input_processor.FileBasedInputProcessor(
        props[standard_component_specs.INPUT_BASE_KEY], input_config.splits, range_config)
    span, version = processor.resolve_span_and_version()
    props[utils.SPAN_PROPERTY_NAME] = span
    props[utils.VERSION_PROPERTY_NAME] = version
    props[utils.FINGERPRINT_PROPERTY_NAME] = processor.get_input_fingerprint(span, version)
    for split in input_config.splits:
        split.pattern = processor.get_pattern_for_span_version(split.pattern, span, version)
    props[standard_component_specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(input_config)
    return props


class Executor(csv_executor.Executor):

    def Do(self, input_dict, output_dict, exec_properties):
        if utils.SPAN_PROPERTY_NAME not in exec_properties:
            exec_properties = resolve_span(exec_properties)
            logging.info('No ExampleGen driver ran; resolved span %s, version %s',
                         exec_properties[utils.SPAN_PROPERTY_NAME],
                         exec_properties[utils.VERSION_PROPERTY_NAME])
            # What the driver would have recorded on the Examples artifact.
            for artifact in output_dict[standard_component_specs.EXAMPLES_KEY]:
                driver.update_output_artifact(exec_properties, artifact.mlmd_artifact)
        super().Do(input_dict, output_dict, exec_properties)
