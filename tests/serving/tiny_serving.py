"""A serving root with two tiny real SavedModels (seconds to build, no pipeline run).

The feedback and export tests need a real server answering real predicts with
a raw-feature signature, not the trained taxi model: v1 stable and v2 canary
at 50%, each `predict_raw(fare, company) -> probabilities`.
"""
import os

from rollout import control

MODEL = 'taxi'
SIGNATURE = 'predict_raw'
TRANSFORM_SIGNATURE = 'transform_features'


def save_raw_model(path, weight, transform=None):
    """`predict_raw(fare, company) -> probabilities` at `weight`; with
    `transform` (serialized tf.Examples -> dict of tensors), also exported as
    the `transform_features` signature the live-quality join calls."""
    import tensorflow as tf

    class Raw(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(float(weight))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='fare'),
                                      tf.TensorSpec([None], tf.string, name='company')])
        def raw(self, fare, company):
            length = tf.cast(tf.strings.length(company), tf.float32)
            return {'probabilities': tf.reshape(tf.sigmoid(self.w * fare - length), [-1, 1])}

    module = Raw()
    signatures = {SIGNATURE: module.raw}
    if transform is not None:
        module.transform = tf.function(transform, input_signature=[
            tf.TensorSpec([None], tf.string, name='examples')])
        signatures[TRANSFORM_SIGNATURE] = module.transform
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def stage_two_versions(root):
    """`root`/serving with stable v1 and canary v2 at 50%; returns the serving root."""
    serving = os.path.join(str(root), 'serving')
    controller = control.RolloutController(serving, MODEL)
    for version in (1, 2):
        src = save_raw_model(os.path.join(str(root), 'exports', str(version)), version / 10)
        controller.stage(src, canary_percent=50)
    return serving


def instances(count, start=0):
    return [{'fare': 5.0 + i, 'company': 'Cab %d' % i} for i in range(start, start + count)]
