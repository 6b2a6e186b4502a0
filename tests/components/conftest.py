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
