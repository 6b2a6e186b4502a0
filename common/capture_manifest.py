"""The capture manifest beside an exported span: its name, its format, its reader.

`tfx-canary capture export` (serving/export.py, which decides what goes into
it) writes

    DATA_ROOT/span-N/data.csv
    DATA_ROOT/span-N/capture-manifest.json

The manifest says that the span's rows came from production capture, which
model versions and roles served them, the time range, the row and label
counts and the capture rate. Lineage reads it for a model trained on such a
span, so the file name and the reader live here, in the bottom layer: the
writer (serving) and the reader (lineage) may not import each other.
"""
import json
import os

FILE_NAME = 'capture-manifest.json'
FORMAT = 1
SOURCE = 'production capture'


def path_in(span_dir):
    return os.path.join(span_dir, FILE_NAME)


def read(span_dir):
    """The manifest dict of the span folder `span_dir`, or None when there is none.

    A manifest that is not readable JSON, or not one `capture export` wrote
    (another `source`, a newer `format`), is returned as {'error': why} so a
    reader can say so instead of guessing.
    """
    path = path_in(span_dir)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        return {'error': '%s is not readable: %s' % (path, e), 'path': path}
    if not isinstance(manifest, dict) or manifest.get('source') != SOURCE:
        return {'error': '%s is not a capture manifest (no source %r)' % (path, SOURCE),
                'path': path}
    if not isinstance(manifest.get('format'), int) or manifest['format'] > FORMAT:
        return {'error': '%s has format %r; this tfx-canary reads format %d and older'
                         % (path, manifest.get('format'), FORMAT), 'path': path}
    return dict(manifest, path=path)
