"""Wide-and-deep Keras model for the taxi "big tipper" label (TFX Trainer `run_fn`).

Uses tf_keras (Keras 2) because TFX 1.16 / TFMA 0.47 load models through
tf.keras; TF 2.16's default Keras 3 would not round-trip through the Evaluator.

The exported SavedModel has three signatures:
  * `serving_default`     — serialized tf.Examples (what TFMA and gRPC clients send);
  * `predict_raw`         — one named tensor per raw feature, so a REST client can
                            send plain JSON (`{"instances": [{"fare": 7.5, ...}]}`);
  * `transform_features`  — raw tf.Examples -> transformed features (TFMA uses it
                            to get the transformed label).
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import absl.logging
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx_bsl.public import tfxio

from modules import features
from modules.hparams import hparams_from
from modules.tf_compat import skip_autograph_for_tf_keras

skip_autograph_for_tf_keras()

SERVING_SIGNATURE = 'serving_default'
RAW_SIGNATURE = 'predict_raw'
TRANSFORM_SIGNATURE = 'transform_features'
OUTPUT_KEY = 'probabilities'

def choose_strategy(num_gpus):
    """Returns (strategy_name, use_mixed_precision) for the GPUs visible.

    Several GPUs: MirroredStrategy. One GPU or CPU: the default strategy.
    Mixed precision only pays off (and is only numerically checked) on GPU.
    """
    if num_gpus > 1:
        return 'mirrored', True
    return 'default', num_gpus == 1


def _make_strategy():
    gpus = tf.config.list_physical_devices('GPU')
    name, mixed = choose_strategy(len(gpus))
    absl.logging.info('Trainer sees %d GPU(s): %s strategy, mixed precision %s',
                      len(gpus), name, 'on' if mixed else 'off')
    if mixed:
        keras.mixed_precision.set_global_policy('mixed_float16')
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def build_keras_model(hparams=None):
    """A wide (linear on one-hots) and deep (MLP on numerics + embeddings) model.

    Inputs are the transformed features, each of shape [batch, 1].
    """
    hparams = hparams_from(hparams)
    xf = features.transformed_name
    inputs, wide, deep = {}, [], []

    for key in features.DENSE_FLOAT_FEATURE_KEYS:
        inputs[xf(key)] = keras.layers.Input(shape=(1,), name=xf(key), dtype=tf.float32)
        deep.append(inputs[xf(key)])

    categorical = (
        [(k, features.FEATURE_BUCKET_COUNT) for k in features.BUCKET_FEATURE_KEYS]
        + list(zip(features.CATEGORICAL_NUMERICAL_FEATURE_KEYS,
                   features.CATEGORICAL_NUMERICAL_FEATURE_MAX))
        + [(k, features.VOCAB_SIZE + features.OOV_SIZE)
           for k in features.CATEGORICAL_STRING_FEATURE_KEYS])
    for key, num_values in categorical:
        inp = keras.layers.Input(shape=(1,), name=xf(key), dtype=tf.int64)
        inputs[xf(key)] = inp
        wide.append(keras.layers.CategoryEncoding(
            num_tokens=num_values, output_mode='one_hot', name='onehot_' + key)(inp))
        embedded = keras.layers.Embedding(
            num_values, hparams['embedding_dim'], name='embed_' + key)(inp)
        deep.append(keras.layers.Flatten(name='flat_' + key)(embedded))

    d = keras.layers.concatenate(deep, name='deep_inputs')
    for i, units in enumerate(hparams['hidden_units']):
        d = keras.layers.Dense(units, activation='relu', name='deep_%d' % i)(d)
    deep_logit = keras.layers.Dense(1, name='deep_logit')(d)
    wide_logit = keras.layers.Dense(1, name='wide_logit')(
        keras.layers.concatenate(wide, name='wide_inputs'))
    logit = keras.layers.add([wide_logit, deep_logit], name='logit')
    # float32 output even under mixed precision, for a numerically sane sigmoid.
    output = keras.layers.Activation('sigmoid', dtype='float32', name=OUTPUT_KEY)(logit)

    model = keras.Model(inputs=inputs, outputs=output)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=hparams['learning_rate']),
        loss='binary_crossentropy',
        metrics=[keras.metrics.BinaryAccuracy(), keras.metrics.AUC(name='auc')])
    return model


def warm_start_from(model, base_model_dir):
    """Copies weights layer by layer from the baseline model where shapes match.

    Returns the names of layers copied. A baseline that cannot be loaded is
    logged and skipped: warm start is an optimisation, never a reason to fail.
    """
    try:
        base = keras.models.load_model(base_model_dir, compile=False)
    except Exception as e:  # pylint: disable=broad-except
        absl.logging.warning('warm start skipped: cannot load %s: %s', base_model_dir, e)
        return []
    base_layers = {layer.name: layer for layer in base.layers}
    copied = []
    for layer in model.layers:
        source = base_layers.get(layer.name)
        if source is None or not layer.weights:
            continue
        src_weights = source.get_weights()
        if [w.shape for w in src_weights] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(src_weights)
            copied.append(layer.name)
    absl.logging.info('warm start: copied %d layers from %s', len(copied), base_model_dir)
    return copied


def _expand(tensors):
    """Keras Inputs are [batch, 1]; Transform outputs are [batch]."""
    return {k: tf.reshape(v, [-1, 1]) for k, v in tensors.items()}


def _raw_input_specs(raw_feature_spec):
    """TensorSpecs for the JSON-friendly signature: one [batch] tensor per feature."""
    return {key: tf.TensorSpec([None], raw_feature_spec[key].dtype, name=key)
            for key in features.RAW_FEATURE_KEYS}


def _to_raw_features(named, raw_feature_spec):
    """Dense [batch] tensors -> the structure tf.io.parse_example would produce."""
    raw = {}
    for key, value in named.items():
        spec = raw_feature_spec[key]
        if isinstance(spec, tf.io.FixedLenFeature):
            raw[key] = tf.reshape(value, [-1, 1])
        else:  # VarLenFeature: one value per row, every row present.
            n = tf.shape(value, out_type=tf.int64)[0]
            indices = tf.stack([tf.range(n), tf.zeros([n], tf.int64)], axis=1)
            raw[key] = tf.SparseTensor(indices, value, tf.stack([n, 1]))
    return raw


def make_signatures(model, tf_transform_output):
    """The three exported signatures (see module docstring)."""
    # Attach the layer to the model so it is tracked and saved with it.
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_feature_spec = tf_transform_output.raw_feature_spec()
    # Parse only what the model uses: clients need not send the label or
    # columns the model ignores (e.g. trip_start_timestamp).
    serving_spec = {k: raw_feature_spec[k] for k in features.RAW_FEATURE_KEYS}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
    def serve_tf_examples(serialized):
        parsed = tf.io.parse_example(serialized, serving_spec)
        return {OUTPUT_KEY: model(_expand(model.tft_layer(parsed)))}

    @tf.function(input_signature=[_raw_input_specs(raw_feature_spec)])
    def serve_raw(named):
        transformed = model.tft_layer(_to_raw_features(named, raw_feature_spec))
        return {OUTPUT_KEY: model(_expand(transformed))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
    def transform_features(serialized):
        parsed = tf.io.parse_example(serialized, raw_feature_spec)
        return model.tft_layer(parsed)

    return {
        SERVING_SIGNATURE: serve_tf_examples.get_concrete_function(),
        RAW_SIGNATURE: serve_raw.get_concrete_function(),
        TRANSFORM_SIGNATURE: transform_features.get_concrete_function(),
    }


def _input_fn(file_pattern, data_accessor, tf_transform_output, batch_size, seed):
    """Shuffled batches of (transformed features, label), repeated forever."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, shuffle_seed=seed,
            label_key=features.transformed_name(features.LABEL_KEY)),
        tf_transform_output.transformed_metadata.schema)
    return dataset.map(lambda x, y: (_expand(x), y)).prefetch(tf.data.AUTOTUNE)


class _LogEpoch(keras.callbacks.Callback):
    """One log line per epoch with its losses and metrics (the Trainer's log)."""

    def on_epoch_end(self, epoch, logs=None):
        absl.logging.info('Trainer epoch %d: %s', epoch + 1, ', '.join(
            '%s %.4f' % (k, v) for k, v in sorted((logs or {}).items())))


def run_fn(fn_args: FnArgs):
    """TFX Trainer entry point: train, then export the serving SavedModel."""
    custom_config = dict(fn_args.custom_config or {})
    custom_config.pop('module_fingerprint', None)  # Cache key for code changes, not a knob.
    hparams = hparams_from(custom_config)
    keras.utils.set_random_seed(hparams['seed'])
    # A seed alone is not enough: some kernels (e.g. the embedding gradients'
    # segment sums) reduce in thread-scheduling order, so a re-run on the same
    # data could give other weights and be staged again as a "new" canary
    # (CanaryPusher's already-serving check compares the weights' hash).
    tf.config.experimental.enable_op_determinism()
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train_ds = _input_fn(fn_args.train_files, fn_args.data_accessor,
                         tf_transform_output, hparams['batch_size'], hparams['seed'])
    eval_ds = _input_fn(fn_args.eval_files, fn_args.data_accessor,
                        tf_transform_output, hparams['batch_size'], hparams['seed'])

    strategy = _make_strategy()
    with strategy.scope():
        model = build_keras_model(hparams)
    if hparams['warm_start'] and fn_args.base_model:
        warm_start_from(model, fn_args.base_model)

    tensorboard = keras.callbacks.TensorBoard(
        log_dir=fn_args.model_run_dir, update_freq='epoch')
    # verbose=0 + _LogEpoch: Keras' own progress line would land in the run's
    # stdout between the pipeline's progress lines; the log keeps it.
    model.fit(train_ds, steps_per_epoch=fn_args.train_steps,
              validation_data=eval_ds, validation_steps=fn_args.eval_steps,
              callbacks=[tensorboard, _LogEpoch()], verbose=0)
    # save_traces=False: skip re-tracing every layer's call for Keras metadata
    # (several seconds); the layers are all stock Keras, so configs suffice.
    model.save(fn_args.serving_model_dir, save_format='tf', save_traces=False,
               signatures=make_signatures(model, tf_transform_output))
