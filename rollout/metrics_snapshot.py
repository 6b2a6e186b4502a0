"""The serving metrics snapshot: `tfx-canary serve` writes it, `rollout analyze` reads it.

One JSON document per model, next to its rollout.json (or one for every model
at a path of the server's choosing, or served at /monitoring/snapshot):

    {"format": "tfx-canary.serving-metrics/1", "written_at": <epoch seconds>,
     "server": {...}, "models": {<model>: {"window": {...}, "lifetime": {...}}}}

serving/metrics.py builds it; this module owns its format name, its file name
and its reader, so the writer (serving) depends on rollout and not the other
way round.
"""
import json
import os
import urllib.error
import urllib.request

from rollout.errors import RolloutError

SNAPSHOT_FORMAT = 'tfx-canary.serving-metrics/1'
SNAPSHOT_FILE = 'serving-metrics.json'
SNAPSHOT_URL_PATH = '/monitoring/snapshot'   # Where `serve` answers with it.


def snapshot_path(serving_root, model_name):
    """Where the server writes, and `rollout analyze` reads, a model's snapshot."""
    return os.path.join(serving_root, model_name, SNAPSHOT_FILE)


def _fetch(url):
    if SNAPSHOT_URL_PATH not in url:
        url = url.rstrip('/') + SNAPSHOT_URL_PATH
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read().decode('utf-8'))
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise RolloutError('cannot read metrics from %s: %s (is `tfx-canary serve` '
                           'running there?)' % (url, getattr(e, 'reason', e))) from None


def _read(path):
    if not os.path.isfile(path):
        raise RolloutError('no metrics snapshot at %s: run `tfx-canary serve` (it writes '
                           'one every few seconds) or pass --metrics URL|FILE' % path)
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise RolloutError('cannot read metrics snapshot %s: %s' % (path, e)) from None
    if not isinstance(data, dict):
        raise RolloutError('%s is not a metrics snapshot' % path)
    return data


def load_snapshot(source):
    """The server's metrics snapshot from a file path or an http(s) URL."""
    if source.startswith(('http://', 'https://')):
        data = _fetch(source)
    else:
        data = _read(source)
    if not isinstance(data, dict) or data.get('format') != SNAPSHOT_FORMAT:
        found = data.get('format') if isinstance(data, dict) else type(data).__name__
        raise RolloutError('%s is not a tfx-canary metrics snapshot (format %r, expected %r)'
                           % (source, found, SNAPSHOT_FORMAT))
    return data
