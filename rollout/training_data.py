"""What each staged version was trained on: `<serving_root>/<model>/training-data/<version>/`.

The drift gate compares a new span with the data the *stable* model learned
from, and `capture validate` compares served rows with the data of the version
that served them. Both need that data's statistics and schema at run time,
without a resolver (open-source KFP has none) and after the pipeline outputs
that produced them are gone. So the pusher stages them beside each version:

    <model>/training-data/<version>/statistics/Split-<split>/FeatureStats.pb
    <model>/training-data/<version>/schema.pbtxt
    <model>/training-data/<version>/source.json    span, where the copies came from

Outside the numbered SavedModel folder: TF Serving only loads directories
named by integers, and KServe's storageUri names the version folder itself.
The folder is published (temp dir, fsync, rename) *before* its version's
folder, so a visible version always has its training data; pruning removes
both. This module owns the layout; everyone else calls it.
"""
import dataclasses
import json
import os
import shutil
from typing import Optional, Tuple

from common import storage
from rollout import fsutil
from rollout.errors import RolloutError

TRAINING_DATA_DIR = 'training-data'
STATISTICS_DIR = 'statistics'
SCHEMA_FILE = 'schema.pbtxt'
SOURCE_FILE = 'source.json'
STATISTICS_FILE = 'FeatureStats.pb'   # What StatisticsGen writes per split.
SPLIT_PREFIX = 'Split-'
FORMAT = 'tfx-canary.training-data/1'
_TEMP_PREFIX = '.staging-'


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The data a model was trained on, as the pusher hands it over.

    `statistics_dir` is a StatisticsGen output (Split-*/FeatureStats.pb);
    `span` says which span(s) in words ("span 2", "spans 1-3").
    """
    statistics_dir: str
    schema_file: Optional[str]
    span: str


@dataclasses.dataclass(frozen=True)
class StagedTrainingData:
    """The training data staged beside one version."""
    version: int
    directory: str
    span: str
    splits: Tuple[str, ...]
    schema_file: Optional[str]

    @property
    def statistics_dir(self) -> str:
        return os.path.join(self.directory, STATISTICS_DIR)

    def statistics_file(self, split: str) -> str:
        return os.path.join(self.statistics_dir, SPLIT_PREFIX + split, STATISTICS_FILE)


def root(serving_root: str, model_name: str) -> str:
    return os.path.join(serving_root, model_name, TRAINING_DATA_DIR)


def data_dir(serving_root: str, model_name: str, version: int) -> str:
    return os.path.join(root(serving_root, model_name), str(int(version)))


def _splits_in(statistics_dir):
    return tuple(sorted(
        e.name[len(SPLIT_PREFIX):] for e in fsutil.entries(statistics_dir)
        if e.name.startswith(SPLIT_PREFIX)
        and os.path.isfile(os.path.join(e.path, STATISTICS_FILE))))


def write(serving_root: str, model_name: str, version: int, data: TrainingData) -> str:
    """Publishes `data` as version's training data; returns its folder.

    The caller holds the model lock (the pusher stages under it). A folder
    already there can only be the leftover of a stage that crashed before its
    version was published (version numbers of published versions are never
    reused): it is replaced.
    """
    splits = _splits_in(data.statistics_dir)
    if not splits:
        raise RolloutError(
            f'{data.statistics_dir} holds no {SPLIT_PREFIX}*/{STATISTICS_FILE}: pass a '
            f'StatisticsGen output folder')
    parent = root(serving_root, model_name)
    fsutil.makedirs_durable(parent)
    final = data_dir(serving_root, model_name, version)
    temp = os.path.join(parent, f'{_TEMP_PREFIX}{version}-{os.getpid()}')
    shutil.rmtree(temp, ignore_errors=True)
    try:
        os.makedirs(os.path.join(temp, STATISTICS_DIR))
        for split in splits:
            fsutil.copy_tree_durable(os.path.join(data.statistics_dir, SPLIT_PREFIX + split),
                                     os.path.join(temp, STATISTICS_DIR, SPLIT_PREFIX + split))
        if data.schema_file:
            with open(data.schema_file, 'rb') as f:
                fsutil.atomic_write_bytes(os.path.join(temp, SCHEMA_FILE), f.read())
        source = {'format': FORMAT, 'version': int(version), 'span': data.span,
                  'splits': list(splits), 'statistics_from': data.statistics_dir,
                  'schema_from': data.schema_file}
        fsutil.atomic_write_text(os.path.join(temp, SOURCE_FILE),
                                 json.dumps(source, indent=2, sort_keys=True) + '\n')
        fsutil.fsync_dir(temp)
        fsutil.remove_dirs([final])
        os.rename(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    fsutil.fsync_dir(parent)
    return final


def read(serving_root: str, model_name: str, version: int) -> Optional[StagedTrainingData]:
    """The training data staged beside `version`, or None (staged before this
    existed, or never). Local paths and fileio URIs (gs://, s3://) alike."""
    directory = data_dir(serving_root, model_name, version)
    source_path = os.path.join(directory, SOURCE_FILE)
    if not storage.isfile(source_path):
        return None
    raw = storage.read_bytes(source_path)
    try:
        source = json.loads(raw.decode('utf-8'))
        if source.get('format') != FORMAT:
            raise ValueError('format is %r, not %r' % (source.get('format'), FORMAT))
        splits = tuple(str(s) for s in source['splits'])
        span = str(source['span'])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise RolloutError(f'{source_path} is not a valid training-data record ({e}): '
                           f'remove {directory} (drift checks against version {version} '
                           f'are then skipped) or re-stage the version') from e
    schema = os.path.join(directory, SCHEMA_FILE) if source.get('schema_from') else None
    return StagedTrainingData(version=int(version), directory=directory, span=span,
                              splits=splits, schema_file=schema)


def remove(serving_root: str, model_name: str, versions) -> None:
    """Withdraws the training data of `versions` (pruned or unpublished); caller holds the lock."""
    fsutil.remove_dirs([data_dir(serving_root, model_name, v) for v in versions])


def clean_stale(serving_root: str, model_name: str):
    """Removes leftovers of killed writers (hidden folders); caller holds the lock."""
    parent = root(serving_root, model_name)
    removed = []
    for entry in fsutil.entries(parent):
        if entry.name.startswith((_TEMP_PREFIX, fsutil.DELETING_PREFIX)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed
