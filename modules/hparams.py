"""Model hyperparameters: defaults and validation (no TensorFlow import, so configs stay cheap)."""

# What a pipeline may override through Trainer's custom_config.
DEFAULT_HPARAMS = {
    'hidden_units': [64, 32],
    'embedding_dim': 8,
    'learning_rate': 0.005,
    'batch_size': 128,
    'warm_start': True,   # Start from the baseline model's weights when there is one.
    'seed': 42,           # Same data + same seed -> same model: reruns are comparable.
}


def hparams_from(custom_config):
    """Merges Trainer custom_config over the defaults; unknown keys are an error."""
    custom_config = dict(custom_config or {})
    unknown = sorted(set(custom_config) - set(DEFAULT_HPARAMS))
    if unknown:
        raise ValueError('unknown model hyperparameter(s) %s; known: %s'
                         % (unknown, sorted(DEFAULT_HPARAMS)))
    merged = dict(DEFAULT_HPARAMS)
    merged.update(custom_config)
    return merged


def parse_assignment(text):
    """'key=value' from the command line -> (key, value); value parsed as JSON when it can be."""
    import json
    key, sep, value = text.partition('=')
    if not sep or not key:
        raise ValueError('expected KEY=VALUE, got %r' % text)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value
