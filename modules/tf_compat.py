"""One TF 2.16 + tf_keras start-up fix, applied by every process that trains or loads models.

TF 2.16's AutoGraph skips converting its own packages and `keras`, but not
`tf_keras` (Keras 2, which TFX 1.16 needs). So the first `fit`/`predict` in a
process transpiles ~2,800 tf_keras library functions to graph code: ~27 s of
a fresh process's first training step here (3.6 s with the rule below).
tf_keras's own code is already written for graph mode, so AutoGraph has
nothing to add there; only our code is converted. Uses TF's internal rule list
because there is no public switch for it.
"""
_applied = False


def skip_autograph_for_tf_keras():
    """Idempotent: prepend DoNotConvert('tf_keras') to AutoGraph's rules."""
    global _applied
    if _applied:
        return
    try:
        from tensorflow.python.autograph.core import config as autograph_config
        rules = tuple(autograph_config.CONVERSION_RULES)
        if not any(getattr(r, '_prefix', None) == 'tf_keras' for r in rules):
            autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert('tf_keras'),) + rules
    except (ImportError, AttributeError):  # A TF without this internal list: nothing to fix.
        pass
    _applied = True
