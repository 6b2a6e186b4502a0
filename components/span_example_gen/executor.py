"""CsvExampleGen executor for a span or a span range, with or without a driver.

Where each runner leaves resolution:

  * LocalDagRunner runs the component's driver (TFX's FileBasedDriver, or
    SpanRangeDriver for a range): everything is resolved, the executor only
    reads.
  * Open-source KFP v2 runs no driver at all. TFX compiles ExampleGen's driver
    into the KFP IR as a `lifecycle.pre_cache_check` hook; the OSS backend (its
    Argo compiler and launcher) never reads `lifecycle`, so the stock executor
    would glob the literal pattern `span-{SPAN}/*.csv`. This executor resolves
    the span (or the range) in-process with TFX's own input processor.
  * Vertex AI runs that hook, i.e. TFX's *stock* driver: it resolves span B of
    a range (the component's range_config is StaticRange(B, B)) and nothing
    else; the executor resolves the rest of the range.

A range's spans are read in one Beam job: one read per span's concrete pattern,
flattened *before* column types are inferred, so a column that holds integers in
one span and floats in another becomes FLOAT everywhere (separate reads would
emit INT64 and FLOAT examples for the same feature). Then the usual hash split.
"""
import json
import os

from absl import logging
import apache_beam as beam
from tfx.components.example_gen import utils
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx_bsl.coders import csv_decoder

from components.span_example_gen import resolve

# TFX's CSV parsing DoFns, reused so a range parses exactly like one span.
_ReadCsvRecordsFromTextFile = csv_executor._ReadCsvRecordsFromTextFile  # pylint: disable=protected-access
_ParsedCsvToTfExample = csv_executor._ParsedCsvToTfExample  # pylint: disable=protected-access


class SpanRangeCsvToExample(beam.PTransform):
    """tf.Examples from the CSV files of several spans, typed consistently.

    `spans`: [(span, pattern relative to input_base), ...]. Every span must
    match files, and every file must have the same header.
    """

    def __init__(self, input_base, spans):
        super().__init__()
        self._input_base = input_base
        self._spans = [(int(span), pattern) for span, pattern in spans]

    def expand(self, pipeline):
        files_by_span = []
        for span, pattern in self._spans:
            files = sorted(fileio.glob(os.path.join(self._input_base, pattern)))
            if not files:
                raise RuntimeError('span %d: pattern %s does not match any files'
                                   % (span, os.path.join(self._input_base, pattern)))
            files_by_span.append((span, files))
        first = files_by_span[0][1][0]
        column_names = io_utils.load_csv_column_names(first)
        for _, files in files_by_span:
            for path in files:
                if io_utils.load_csv_column_names(path) != column_names:
                    raise RuntimeError('%s has a different CSV header than %s: every span of a '
                                       'span range needs the same columns' % (path, first))
        logging.info('Reading spans %s to tf.Examples', ', '.join(str(s) for s, _ in files_by_span))

        # Each file is read whole and in order (multi-line quoted fields).
        parsed_per_span = [
            pipeline
            | 'CreateFilenames[span-%d]' % span >> beam.Create(files)
            | 'ReadFromText[span-%d]' % span >> beam.ParDo(_ReadCsvRecordsFromTextFile())
            | 'ParseCSVLine[span-%d]' % span >> beam.ParDo(csv_decoder.ParseCSVLine(delimiter=','))
            | 'ExtractParsedCSVLines[span-%d]' % span >> beam.Keys()
            for span, files in files_by_span]
        parsed = tuple(parsed_per_span) | 'FlattenSpans' >> beam.Flatten()
        column_infos = beam.pvalue.AsSingleton(
            parsed | 'InferColumnTypes' >> beam.CombineGlobally(
                csv_decoder.ColumnTypeInferrer(column_names, skip_blank_lines=True)))
        return parsed | 'ToTFExample' >> beam.ParDo(_ParsedCsvToTfExample(), column_infos)


def _input_to_examples(exec_properties, split_pattern):
    """The stock CSV read for one span; every span's files for a range."""
    spans = exec_properties.get(resolve.SPAN_RANGE_PATTERNS_KEY)
    if spans:
        return SpanRangeCsvToExample(
            exec_properties[standard_component_specs.INPUT_BASE_KEY], json.loads(spans))
    return csv_executor._CsvToExample(exec_properties, split_pattern)  # pylint: disable=protected-access


class Executor(csv_executor.Executor):

    def GetInputSourceToExamplePTransform(self):
        return _input_to_examples

    def Do(self, input_dict, output_dict, exec_properties):
        examples = output_dict[standard_component_specs.EXAMPLES_KEY]
        if exec_properties.get(resolve.SPAN_RANGE_KEY):
            if resolve.SPAN_RANGE_PATTERNS_KEY not in exec_properties:
                # No SpanRangeDriver ran (KFP: no driver; Vertex: TFX's, span B only).
                exec_properties = resolve.resolve_span_range(exec_properties)
                logging.info('Resolved span range %s in the executor',
                             exec_properties[resolve.SPAN_RANGE_KEY])
            for artifact in examples:
                resolve.update_output_artifact(exec_properties, artifact.mlmd_artifact)
        elif utils.SPAN_PROPERTY_NAME not in exec_properties:
            exec_properties = resolve.resolve_span(exec_properties)
            logging.info('No ExampleGen driver ran; resolved span %s, version %s',
                         exec_properties[utils.SPAN_PROPERTY_NAME],
                         exec_properties[utils.VERSION_PROPERTY_NAME])
            # What the driver would have recorded on the Examples artifact.
            for artifact in examples:
                resolve.update_output_artifact(exec_properties, artifact.mlmd_artifact)
        super().Do(input_dict, output_dict, exec_properties)
