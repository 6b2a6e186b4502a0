"""CsvExampleGen for a span range A..B: all spans in one Examples artifact.

TFX's ExampleGen ingests one span per execution, and the TFX-idiomatic way to
train on several (a Resolver with a span-range strategy in front of Transform)
cannot run on open-source KFP. This component keeps one ExampleGen node and
reads every span of the range itself:

    example_gen = CsvExampleGen(input_base=..., input_config=..., output_config=...,
                                span_range=(1, 3))

  * range_config is StaticRange(B, B), so every stock resolver of it (TFX's
    FileBasedDriver, Vertex's driver hook) sees span B, the newest span;
  * `span_range` ("A-B") and `span_pattern` (the split pattern with {SPAN})
    are extra parameters, read by SpanRangeDriver (local) and the executor;
  * the Examples artifact records span=B, version, an input fingerprint over
    every span's files, and custom property span_range="A-B".

The class keeps TFX's name on purpose: its default node id is `CsvExampleGen`
(summaries, lineage and the local cache are keyed by it) and the kfp runner
matches components by type name (runtime parameter data_root).
"""
from typing import Tuple

from tfx import types
from tfx.components.example_gen import utils
from tfx.components.example_gen.csv_example_gen import component as csv_component
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components.span_example_gen import driver, executor, resolve


class SpanRangeExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = dict(
        standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        **{resolve.SPAN_RANGE_KEY: ExecutionParameter(type=str),
           resolve.SPAN_PATTERN_KEY: ExecutionParameter(type=str)})


class CsvExampleGen(csv_component.CsvExampleGen):
    """tfx.components.CsvExampleGen over every span from A to B (inclusive)."""
    SPEC_CLASS = SpanRangeExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.SpanRangeDriver

    def __init__(self, input_base: str, input_config: example_gen_pb2.Input,
                 output_config: example_gen_pb2.Output, span_range: Tuple[int, int]):
        start, end = span_range
        if not all(isinstance(v, int) and v >= 0 for v in span_range) or start > end:
            raise ValueError('span_range %r: expected two span numbers A <= B, both >= 0'
                             % (span_range,))
        if len(input_config.splits) != 1:
            raise ValueError('a span range needs exactly one input split (split the output '
                             'with output_config), got %d' % len(input_config.splits))
        split = input_config.splits[0]
        is_match_span, is_match_date, _ = utils.verify_split_pattern_specs(split)
        if not (is_match_span or is_match_date):
            raise ValueError('split pattern %r has no {SPAN} (or date) spec: a span range '
                             'needs one' % split.pattern)
        spec = SpanRangeExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            range_config=range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
                start_span_number=end, end_span_number=end)),
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            examples=types.Channel(type=standard_artifacts.Examples),
            **{resolve.SPAN_RANGE_KEY: resolve.format_span_range(start, end),
               resolve.SPAN_PATTERN_KEY: split.pattern})
        # FileBasedExampleGen.__init__ would build the stock spec, without the range.
        base_component.BaseComponent.__init__(self, spec=spec)  # pylint: disable=non-parent-init-called
