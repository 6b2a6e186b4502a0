"""Tiny real SavedModels (the pusher loads and checks their signatures)."""
import os

import pytest


def save_tiny_model(path, weight):
    """A SavedModel with the two signatures CanaryPusher requires.

    `weight` changes the variable, hence fingerprint.pb: distinct weights are
    distinct exports, the same weight re-saved is the same one.
    """
    import tensorflow as tf

    from modules import model as model_lib

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(float(weight))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
        def serve(self, examples):
            return {'probabilities': tf.sigmoid(self.w * tf.cast(tf.strings.length(examples),
                                                                 tf.float32))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='fare')])
        def raw(self, fare):
            return {'probabilities': tf.sigmoid(self.w * fare)}

    module = Tiny()
    tf.saved_model.save(module, path, signatures={
        model_lib.SERVING_SIGNATURE: module.serve, model_lib.RAW_SIGNATURE: module.raw})
    return path


@pytest.fixture(scope='session')
def tiny_models(tmp_path_factory):
    """{weight: Model artifact folder holding Format-Serving/} for a few weights."""
    root = tmp_path_factory.mktemp('tiny-models')
    models = {}
    for weight in (1, 2, 3, 4):
        model_uri = str(root / ('model-%d' % weight))
        save_tiny_model(os.path.join(model_uri, 'Format-Serving'), weight)
        models[weight] = model_uri
    return models


def span_statistics(span, mutate=None):
    """TFDV statistics of a bundled span's rows (in memory), after `mutate(dataframe)`.

    The statistics StatisticsGen computes for that span, up to how CSV
    columns are typed: good enough for distances between spans.
    """
    import pandas as pd
    import tensorflow_data_validation as tfdv

    from tests.conftest import DATA_ROOT
    frame = pd.read_csv(os.path.join(DATA_ROOT, 'span-%d' % span, 'data.csv'))
    if mutate is not None:
        mutate(frame)
    return tfdv.generate_statistics_from_dataframe(frame)


def with_custom_properties(artifact, custom):
    """`artifact` with int/string custom properties set, as an executor would."""
    for name, value in custom.items():
        if isinstance(value, int):
            artifact.set_int_custom_property(name, value)
        else:
            artifact.set_string_custom_property(name, value)
    return artifact


def statistics_artifact(uri, statistics, span, splits=('train', 'eval'), **custom):
    """An ExampleStatistics artifact laid out as StatisticsGen writes it."""
    from tfx.types import artifact_utils, standard_artifacts
    artifact = standard_artifacts.ExampleStatistics()
    artifact.uri = str(uri)
    artifact.span = span
    artifact.split_names = artifact_utils.encode_split_names(list(splits))
    for split in splits:
        folder = os.path.join(str(uri), 'Split-' + split)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, 'FeatureStats.pb'), 'wb') as f:
            f.write(statistics.SerializeToString())
    return with_custom_properties(artifact, custom)


@pytest.fixture(scope='session')
def bundled_statistics():
    """{span: statistics} of the three bundled spans."""
    return {span: span_statistics(span) for span in (1, 2, 3)}


def examples_artifact(uri, span, span_range=None):
    """An Examples artifact as ExampleGen records it (span as a custom property)."""
    from tfx.types import standard_artifacts
    artifact = standard_artifacts.Examples()
    artifact.uri = str(uri)
    artifact.set_int_custom_property('span', span)
    if span_range:
        artifact.set_string_custom_property('span_range', span_range)
    return artifact
