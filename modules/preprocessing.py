"""tf.Transform preprocessing for the taxi model (TFX Transform `preprocessing_fn`).

Every raw column may be missing in a CSV row, so each input is first made dense
with a per-type default; then numerics are z-scored, coordinates bucketized,
categoricals mapped through vocabularies, and the label derived.
"""
import tensorflow as tf
import tensorflow_transform as tft

from modules import features


def fill_in_missing(x, default_value):
    """Returns a dense rank-1 tensor, with `default_value` where `x` had no value.

    `x` is a SparseTensor for columns that may be empty (VarLenFeature) or a
    dense [batch, 1] tensor for columns the schema marks as always present.
    """
    if isinstance(x, tf.sparse.SparseTensor):
        dense_shape = tf.stack([x.dense_shape[0], 1])
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, dense_shape), default_value)
    return tf.reshape(x, [-1])


def _default_for(x):
    return '' if x.dtype == tf.string else tf.cast(0, x.dtype)


def preprocessing_fn(inputs):
    """Maps raw features (a dict of Tensors/SparseTensors) to transformed ones."""
    outputs = {}
    for key in features.DENSE_FLOAT_FEATURE_KEYS:
        value = tf.cast(fill_in_missing(inputs[key], _default_for(inputs[key])), tf.float32)
        outputs[features.transformed_name(key)] = tft.scale_to_z_score(value)

    for key in features.BUCKET_FEATURE_KEYS:
        value = tf.cast(fill_in_missing(inputs[key], _default_for(inputs[key])), tf.float32)
        outputs[features.transformed_name(key)] = tft.bucketize(
            value, features.FEATURE_BUCKET_COUNT)

    for key, size in zip(features.CATEGORICAL_NUMERICAL_FEATURE_KEYS,
                         features.CATEGORICAL_NUMERICAL_FEATURE_MAX):
        value = tf.cast(fill_in_missing(inputs[key], _default_for(inputs[key])), tf.int64)
        # Clip so an unexpected value can never index outside the model's tables.
        outputs[features.transformed_name(key)] = tf.clip_by_value(value, 0, size - 1)

    for key in features.CATEGORICAL_STRING_FEATURE_KEYS:
        outputs[features.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            fill_in_missing(inputs[key], ''),
            top_k=features.VOCAB_SIZE,
            num_oov_buckets=features.OOV_SIZE,
            vocab_filename=key)

    # The label is only present in training/eval data, never at serving time.
    if features.TIPS_KEY in inputs:
        fare = tf.cast(fill_in_missing(inputs[features.FARE_KEY], _default_for(inputs[features.FARE_KEY])), tf.float32)
        tips = tf.cast(fill_in_missing(inputs[features.TIPS_KEY], _default_for(inputs[features.TIPS_KEY])), tf.float32)
        outputs[features.transformed_name(features.LABEL_KEY)] = tf.cast(
            tips > fare * features.BIG_TIP_FRACTION, tf.int64)
    return outputs
