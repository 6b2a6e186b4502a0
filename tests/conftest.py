"""Shared test set-up: Keras 2 for TFX, quiet TF, and the project's data paths."""
import os

# Before any test imports TensorFlow (see runners/cli.py for why).
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # noqa: E402

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROOT = os.path.join(PROJECT_ROOT, 'data', 'taxi')
SCHEMA_PATH = os.path.join(DATA_ROOT, 'schema.pbtxt')


@pytest.fixture(scope='session')
def schema():
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    with open(SCHEMA_PATH) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(','.join(header) + '\n')
        for row in rows:
            f.write(','.join(str(v) for v in row) + '\n')
