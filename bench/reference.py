"""TFX's own taxi example pipeline (`taxi_pipeline_native_keras.py`), run as shipped.

The script reads everything relative to $HOME ($HOME/taxi/data/simple for the
CSV, $HOME/taxi/taxi_utils_native_keras.py for the module file, $HOME/tfx for
outputs), so each run gets a fresh HOME holding the same CSV ours reads. Its
code, Beam args (multi_processing) and 1000 train steps are not touched.
"""
import glob
import os
import shutil
import sys


def example_dir():
    import tfx
    return os.path.join(os.path.dirname(tfx.__file__), 'examples', 'chicago_taxi_pipeline')


def prepare_home(home, csv_path):
    data = os.path.join(home, 'taxi', 'data', 'simple')
    os.makedirs(data)
    shutil.copy(csv_path, os.path.join(data, 'data.csv'))
    shutil.copy(os.path.join(example_dir(), 'taxi_utils_native_keras.py'),
                os.path.join(home, 'taxi', 'taxi_utils_native_keras.py'))


def command():
    return [sys.executable, os.path.join(example_dir(), 'taxi_pipeline_native_keras.py')]


def env(home):
    e = dict(os.environ, HOME=home, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2')
    return e


def metadata_path(home):
    return os.path.join(home, 'tfx', 'metadata', 'chicago_taxi_native_keras', 'metadata.db')


def trained_model_dir(home):
    """The reference Trainer's serving SavedModel."""
    found = sorted(glob.glob(os.path.join(home, 'tfx', 'pipelines', 'chicago_taxi_native_keras',
                                          'Trainer', 'model', '*', 'Format-Serving')))
    return found[-1] if found else None


def eval_split_dir(home):
    found = sorted(glob.glob(os.path.join(home, 'tfx', 'pipelines', 'chicago_taxi_native_keras',
                                          'CsvExampleGen', 'examples', '*', 'Split-eval')))
    return found[-1] if found else None
