"""BaselineModel's second output: the statistics of the data the stable model was trained on.

Read from the copy the pusher staged beside the stable version
(rollout.training_data) and emitted as an ExampleStatistics artifact the
drift gate compares the new span with. Always emitted (a KFP task output
always exists); empty, with has_statistics=0 and a note saying why, when
nothing serves yet or the stable version was staged before training data
was staged with it.
"""
from absl import logging
from tfx.types import artifact_utils
from tfx.utils import io_utils

from common import mlmd_names as names
from rollout import training_data

OUTPUT_KEY = 'statistics'

# Custom properties of the statistics artifact (read by the drift gate).
HAS_STATISTICS = names.HAS_STATISTICS
STATISTICS_VERSION = names.STATISTICS_VERSION
STATISTICS_SPAN = names.STATISTICS_SPAN
STATISTICS_NOTE = names.STATISTICS_NOTE


def emit(statistics_artifact, serving_root, model_name, baseline):
    """Fills `statistics_artifact` from the stable version's staged training data."""
    version = baseline.version if baseline else 0
    staged = training_data.read(serving_root, model_name, version) if baseline else None
    statistics_artifact.set_int_custom_property(STATISTICS_VERSION, version)
    if staged is None:
        note = ('nothing serves yet: a first model has no baseline data to drift from'
                if baseline is None else
                'stable version %d was staged without its training statistics (by a '
                'tfx-canary from before drift checks): drift is checked from the next '
                'stable version on' % version)
        _mark_empty(statistics_artifact, note)
        logging.info('BaselineModel: no baseline statistics: %s', note)
        return
    io_utils.copy_dir(staged.statistics_dir, statistics_artifact.uri)
    statistics_artifact.split_names = artifact_utils.encode_split_names(list(staged.splits))
    statistics_artifact.set_int_custom_property(HAS_STATISTICS, 1)
    statistics_artifact.set_string_custom_property(STATISTICS_SPAN, staged.span)
    statistics_artifact.set_string_custom_property(STATISTICS_NOTE, staged.directory)
    logging.info('BaselineModel: statistics of stable version %d (%s) from %s',
                 version, staged.span, staged.directory)


def _mark_empty(statistics_artifact, note):
    statistics_artifact.split_names = artifact_utils.encode_split_names([])
    statistics_artifact.set_int_custom_property(HAS_STATISTICS, 0)
    statistics_artifact.set_string_custom_property(STATISTICS_SPAN, '')
    statistics_artifact.set_string_custom_property(STATISTICS_NOTE, note)


def span_words(examples) -> str:
    """Which span(s) an Examples artifact holds, in words: 'span 2', 'spans 1-3'.

    ExampleGen records the span as a custom property (TFX 1.16); a span-range
    ExampleGen (components/span_example_gen) adds span_range "A-B".
    StatisticsGen does not carry it over, hence Examples, not statistics.
    """
    if examples is None:
        return 'the new span'
    if examples.has_custom_property(names.SPAN_RANGE) and examples.get_string_custom_property(
            names.SPAN_RANGE):
        return 'spans %s' % examples.get_string_custom_property(names.SPAN_RANGE)
    if examples.has_custom_property(names.SPAN):
        return 'span %d' % examples.get_int_custom_property(names.SPAN)
    return 'span %d' % examples.span


def has_statistics(artifact) -> bool:
    """Whether a baseline statistics artifact holds statistics.

    An artifact without the property (e.g. a StatisticsGen output wired in
    directly) is real statistics.
    """
    if not artifact.has_custom_property(HAS_STATISTICS):
        return True
    return artifact.get_int_custom_property(HAS_STATISTICS) == 1
