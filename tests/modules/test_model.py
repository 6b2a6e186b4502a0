"""The Keras model builds, trains a step on transformed fixtures, and picks its strategy."""
import numpy as np
import pytest

from modules import features, hparams
from modules import model as model_lib

xf = features.transformed_name


def transformed_batch(n=64, seed=0):
    """Random transformed features shaped like Transform's output, [n, 1] each."""
    rng = np.random.default_rng(seed)
    batch = {}
    for key in features.DENSE_FLOAT_FEATURE_KEYS:
        batch[xf(key)] = rng.normal(size=(n, 1)).astype('float32')
    for key in features.BUCKET_FEATURE_KEYS:
        batch[xf(key)] = rng.integers(0, features.FEATURE_BUCKET_COUNT, size=(n, 1))
    for key, size in zip(features.CATEGORICAL_NUMERICAL_FEATURE_KEYS,
                         features.CATEGORICAL_NUMERICAL_FEATURE_MAX):
        batch[xf(key)] = rng.integers(0, size, size=(n, 1))
    for key in features.CATEGORICAL_STRING_FEATURE_KEYS:
        batch[xf(key)] = rng.integers(0, features.VOCAB_SIZE + features.OOV_SIZE, size=(n, 1))
    # A learnable label: big tipper when the first payment bucket is used.
    label = (batch[xf('payment_type')][:, 0] == 0).astype('int64')
    return batch, label


def test_model_trains_a_step_and_predicts_probabilities():
    m = model_lib.build_keras_model({'hidden_units': [8]})
    x, y = transformed_batch()
    before = [w.copy() for w in m.get_weights()]
    history = m.fit(x, y, epochs=1, batch_size=64, verbose=0)
    assert np.isfinite(history.history['loss'][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, m.get_weights()))
    p = m.predict(x, verbose=0)
    assert p.shape == (64, 1) and ((p >= 0) & (p <= 1)).all()


def test_model_takes_every_transformed_feature():
    m = model_lib.build_keras_model()
    assert set(m.input_names) == {xf(k) for k in features.RAW_FEATURE_KEYS}


def test_warm_start_copies_matching_layers(tmp_path):
    base = model_lib.build_keras_model({'hidden_units': [8]})
    x, y = transformed_batch()
    base.fit(x, y, epochs=1, verbose=0)
    base.save(str(tmp_path / 'base'), save_format='tf')
    fresh = model_lib.build_keras_model({'hidden_units': [8]})
    copied = model_lib.warm_start_from(fresh, str(tmp_path / 'base'))
    assert 'deep_0' in copied and 'wide_logit' in copied
    np.testing.assert_allclose(fresh.predict(x, verbose=0), base.predict(x, verbose=0), rtol=1e-5)


def test_warm_start_skips_a_missing_baseline(tmp_path):
    fresh = model_lib.build_keras_model()
    assert model_lib.warm_start_from(fresh, str(tmp_path / 'nothing-here')) == []


@pytest.mark.parametrize('gpus,expected', [
    (0, ('default', False)), (1, ('default', True)), (4, ('mirrored', True))])
def test_strategy_follows_visible_gpus(gpus, expected):
    assert model_lib.choose_strategy(gpus) == expected


def test_unknown_hyperparameter_is_rejected():
    with pytest.raises(ValueError, match='learn_rate'):
        hparams.hparams_from({'learn_rate': 0.1})


def test_tf_keras_library_code_is_not_autograph_converted():
    from tensorflow.python.autograph.core import config as autograph_config
    from modules import tf_compat
    tf_compat.skip_autograph_for_tf_keras()
    tf_compat.skip_autograph_for_tf_keras()  # Idempotent.
    rules = [r for r in autograph_config.CONVERSION_RULES if getattr(r, '_prefix', None) == 'tf_keras']
    assert len(rules) == 1
    assert rules[0].matches('tf_keras.src.engine.training') and not rules[0].matches('modules.model')
