"""Span and span-range resolution, done with TFX's own FileBasedInputProcessor.

TFX's ExampleGen ingests one span per execution: its input processor refuses a
StaticRange whose start and end differ. A span range A..B is therefore resolved
one span at a time, each with a StaticRange(s, s) through the stock processor
(so {SPAN:width}, {VERSION} and date specs behave exactly as in TFX), and the
results are combined:

  span                 B, the newest span of the range (what downstream sees)
  version              the version resolved for span B (None without {VERSION})
  input_fingerprint    every span's fingerprint, so any span's change is noticed
  input_config         the split pattern resolved for span B, as TFX's driver
                       (and Vertex's driver hook) leaves it
  span_range_patterns  JSON [[span, concrete pattern], ...], oldest first: what
                       the executor reads

The range itself travels as two component parameters: `span_range` ("A-B") and
`span_pattern` (the split pattern with {SPAN}, which a driver may have replaced
in input_config by then).
"""
import json
import re

from tfx.components.example_gen import driver
from tfx.components.example_gen import input_processor
from tfx.components.example_gen import utils
from tfx.proto import example_gen_pb2
from tfx.proto import range_config_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

SPAN_RANGE_KEY = 'span_range'                    # Parameter and Examples custom property: "A-B".
SPAN_PATTERN_KEY = 'span_pattern'                # Parameter: the split pattern with {SPAN}.
SPAN_RANGE_PATTERNS_KEY = 'span_range_patterns'  # Resolved: JSON [[span, pattern], ...].

_RANGE_RE = re.compile(r'(\d+)-(\d+)')


def format_span_range(start, end):
    return '%d-%d' % (start, end)


def parse_span_range(text):
    """(start, end) from "A-B"; ValueError for anything else."""
    match = _RANGE_RE.fullmatch(text or '')
    if not match or int(match.group(1)) > int(match.group(2)):
        raise ValueError('span_range %r: expected "A-B" with span numbers A <= B' % (text,))
    return int(match.group(1)), int(match.group(2))


def _input_config(exec_properties):
    config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], config)
    return config


def _range_config(exec_properties):
    text = exec_properties.get(standard_component_specs.RANGE_CONFIG_KEY)
    if not text:
        return None
    config = range_config_pb2.RangeConfig()
    proto_utils.json_to_proto(text, config)
    return config


def _static_range(span):
    return range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
        start_span_number=span, end_span_number=span))


def resolve_span(exec_properties):
    """One span, exactly as TFX's ExampleGen driver resolves it: exec_properties
    plus span, version, input_fingerprint and the concrete split patterns."""
    props = dict(exec_properties)
    input_config = _input_config(props)
    processor = input_processor.FileBasedInputProcessor(
        props[standard_component_specs.INPUT_BASE_KEY], input_config.splits,
        _range_config(props))
    span, version = processor.resolve_span_and_version()
    props[utils.SPAN_PROPERTY_NAME] = span
    props[utils.VERSION_PROPERTY_NAME] = version
    props[utils.FINGERPRINT_PROPERTY_NAME] = processor.get_input_fingerprint(span, version)
    for split in input_config.splits:
        split.pattern = processor.get_pattern_for_span_version(split.pattern, span, version)
    props[standard_component_specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(input_config)
    return props


def resolve_span_range(exec_properties):
    """exec_properties plus what reading every span of `span_range` needs (see
    the module docstring). ValueError naming every span without matching files."""
    props = dict(exec_properties)
    start, end = parse_span_range(props[SPAN_RANGE_KEY])
    template = props[SPAN_PATTERN_KEY]
    input_base = props[standard_component_specs.INPUT_BASE_KEY]
    input_config = _input_config(props)
    if len(input_config.splits) != 1:
        raise ValueError('a span range needs exactly one input split, got %d'
                         % len(input_config.splits))
    split = input_config.splits[0]

    resolved, fingerprints, missing, version = [], [], [], None
    for span in range(start, end + 1):
        processor = input_processor.FileBasedInputProcessor(
            input_base, [example_gen_pb2.Input.Split(name=split.name, pattern=template)],
            _static_range(span))
        try:
            found, version = processor.resolve_span_and_version()
        except ValueError as e:
            if not str(e).startswith('Cannot find matching'):
                raise
            missing.append(span)
            continue
        resolved.append([found, processor.get_pattern_for_span_version(template, found, version)])
        fingerprints.append('span %d\n%s' % (found, processor.get_input_fingerprint(found, version)))
    if missing:
        raise ValueError('span range %s: no files match %r under %s for span(s) %s'
                         % (props[SPAN_RANGE_KEY], template, input_base,
                            ', '.join(map(str, missing))))

    split.pattern = resolved[-1][1]
    props[standard_component_specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(input_config)
    props[utils.SPAN_PROPERTY_NAME] = end
    props[utils.VERSION_PROPERTY_NAME] = version  # The newest span's.
    props[utils.FINGERPRINT_PROPERTY_NAME] = '\n'.join(fingerprints)
    props[SPAN_RANGE_PATTERNS_KEY] = json.dumps(resolved)
    return props


def update_output_artifact(exec_properties, mlmd_artifact):
    """What TFX's driver records on the Examples artifact (span, version,
    input_fingerprint), plus span_range="A-B" for a range."""
    driver.update_output_artifact(exec_properties, mlmd_artifact)
    if exec_properties.get(SPAN_RANGE_KEY):
        mlmd_artifact.custom_properties[SPAN_RANGE_KEY].string_value = exec_properties[SPAN_RANGE_KEY]
