"""Scores any taxi SavedModel on the same eval split: AUC and binary accuracy.

TFMA in each pipeline reports what its own EvalConfig asks for (the TFX
example asks for accuracy only), so the bench scores both models itself, on
the same tf.Examples, through each model's `serving_default` signature.
"""
import glob
import os


def _labels_and_examples(split_dir):
    import tensorflow as tf
    files = sorted(glob.glob(os.path.join(split_dir, '*.gz')))
    serialized, labels = [], []
    for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
        ex = tf.train.Example.FromString(record.numpy())
        f = ex.features.feature

        def value(key):
            v = f[key].float_list.value or f[key].int64_list.value
            return float(v[0]) if v else 0.0
        labels.append(1 if value('tips') > 0.2 * value('fare') else 0)
        serialized.append(record.numpy())
    return serialized, labels


def score(model_dir, split_dir, batch=512):
    """{'auc', 'binary_accuracy', 'examples'} of the model on the split's examples."""
    import numpy as np
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    serialized, labels = _labels_and_examples(split_dir)
    serve = tf.saved_model.load(model_dir).signatures['serving_default']
    probs = []
    for i in range(0, len(serialized), batch):
        out = serve(examples=tf.constant(serialized[i:i + batch]))
        probs.append(np.asarray(next(iter(out.values()))).reshape(-1))
    p, y = np.concatenate(probs), np.asarray(labels)
    return {'auc': float(roc_auc_score(y, p)), 'binary_accuracy': float(((p > 0.5) == y).mean()),
            'examples': int(len(y))}
