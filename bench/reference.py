"""TFX's own taxi example pipeline (`taxi_pipeline_native_keras.py`), run as shipped
and with the in-memory DirectRunner.

The script reads everything relative to $HOME ($HOME/taxi/data/simple for the
CSV, $HOME/taxi/taxi_utils_native_keras.py for the module file, $HOME/tfx for
outputs), so each run gets a fresh HOME holding the same CSV ours reads. As
shipped, its code, Beam args (multi_processing) and 1000 train steps are not
touched. The in-memory variant is the one-line change a user who cares about
speed makes first (ours runs in-memory on small data too): its Beam running
mode line becomes in_memory in a copy of the script; nothing else changes.
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


SHIPPED, IN_MEMORY = 'reference', 'reference_in_memory'   # The two variants, as results name them.
_SHIPPED_MODE = "'--direct_running_mode=multi_processing',"
_IN_MEMORY_MODE = "'--direct_running_mode=in_memory',"
_SCRIPT = 'taxi_pipeline_native_keras.py'


def command(home=None, variant=SHIPPED):
    """The reference's command line; IN_MEMORY writes its one-line-changed copy into `home`."""
    script = os.path.join(example_dir(), _SCRIPT)
    if variant == IN_MEMORY:
        script = _in_memory_copy(script, home)
    return [sys.executable, script]


def _in_memory_copy(script, home):
    with open(script) as f:
        text = f.read()
    if text.count(_SHIPPED_MODE) != 1:
        # Another TFX version's example: the one-line change is no longer known to be one line.
        raise RuntimeError('%s: expected exactly one line %s to change to in_memory'
                           % (script, _SHIPPED_MODE))
    copy = os.path.join(home, 'in_memory_' + _SCRIPT)
    with open(copy, 'w') as f:
        f.write(text.replace(_SHIPPED_MODE, _IN_MEMORY_MODE))
    return copy


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
