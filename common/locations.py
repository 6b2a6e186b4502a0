"""Where a tfx-canary workspace keeps its state, and which flags point where.

`tfx-canary run --workspace DIR` writes one workspace:

    DIR/metadata.sqlite   ML Metadata
    DIR/serving/          staged versions, <model>/rollout.json (what serves)
    DIR/capture/          requests captured by `tfx-canary serve`

Every other command takes the same flags (`add_location_options`) and derives
what it was not given with the same rules (`resolve`):

1. The workspace is --workspace; else, for a command that was only pointed at
   a store or a serving root, the workspace that store or root belongs to: the
   folder of --metadata-path, or the parent of --serving-root when that parent
   holds a metadata.sqlite; else ./workspace (relative to the current folder).
2. --metadata-path, --serving-root and --capture-dir default to
   WORKSPACE/metadata.sqlite, WORKSPACE/serving and WORKSPACE/capture.

So `--metadata-path X` alone reads the serving state next to X
(dirname(X)/serving, the layout `run` writes), never ./workspace's, and
`--serving-root S` alone audits into dirname(S)/metadata.sqlite when that
file exists. Commands that read a store may also use the serving root the
store itself recorded (`serving_root_for_store`).

This module is the bottom layer: it imports nothing else of tfx-canary.
"""
import dataclasses
import os
from typing import FrozenSet, Optional, Tuple, Union

DEFAULT_WORKSPACE = 'workspace'          # Relative to the current folder.
DEFAULT_MODEL_NAME = 'taxi'
DEFAULT_PIPELINE_NAME = 'tfx-canary-taxi'
METADATA_FILE = 'metadata.sqlite'
SERVING_DIR = 'serving'
CAPTURE_DIR = 'capture'
PIPELINE_DIR = 'pipeline'
ROLLOUT_FILE = 'rollout.json'

# Names of the settings, as argparse dests and Locations fields.
WORKSPACE, SERVING_ROOT, METADATA_PATH, MODEL_NAME, CAPTURE = (
    'workspace', 'serving_root', 'metadata_path', 'model_name', 'capture_dir')
# Set by a repeatable --model-name: then no --model-name means every model.
REPEATABLE_MODEL_NAME = '_model_name_repeatable'
_FLAGS = {WORKSPACE: '--workspace', SERVING_ROOT: '--serving-root',
          METADATA_PATH: '--metadata-path', MODEL_NAME: '--model-name',
          CAPTURE: '--capture-dir'}


def metadata_path_in(workspace):
    return os.path.join(workspace, METADATA_FILE)


def serving_root_in(workspace):
    return os.path.join(workspace, SERVING_DIR)


def capture_dir_in(workspace):
    return os.path.join(workspace, CAPTURE_DIR)


def pipeline_root_in(workspace):
    return os.path.join(workspace, PIPELINE_DIR)


def rollout_json_path(serving_root, model_name):
    return os.path.join(serving_root, model_name, ROLLOUT_FILE)


def flag(name):
    """'serving_root' -> '--serving-root'."""
    return _FLAGS[name]


@dataclasses.dataclass(frozen=True)
class Locations:
    """The resolved places one command uses, and how each was chosen.

    `given` names the settings passed on the command line; `*_from` say in
    words where the others came from (for messages such as `serving state:`).
    `serving_root` is None only when a command decided no local serving root
    belongs to its store (`serving_root_for_store`).
    """
    workspace: str
    serving_root: Optional[str]
    metadata_path: str
    model_name: Union[str, Tuple[str, ...], None]
    capture_dir: str
    given: FrozenSet[str] = frozenset()
    workspace_from: str = 'default'
    serving_root_from: str = ''
    metadata_path_from: str = ''

    def is_given(self, name):
        return name in self.given

    def rollout_json(self, model_name=None):
        """<serving root>/<model>/rollout.json, or None without a serving root."""
        model_name = model_name or self.model_name
        if self.serving_root is None or not isinstance(model_name, str):
            return None
        return rollout_json_path(self.serving_root, model_name)

    @property
    def metadata_is_a_guess(self):
        """--serving-root alone, no metadata.sqlite next to it: the store is then
        the default workspace's, which may belong to another serving root (check
        with `store_belongs_to` before writing to it or reporting from it)."""
        return (self.is_given(SERVING_ROOT) and not self.is_given(METADATA_PATH)
                and self.workspace_from == 'default')

    def describe_workspace(self):
        """'workspace /abs/ws from --workspace' and the like, for messages."""
        path = os.path.abspath(self.workspace)
        return {
            '--workspace': 'workspace %s from --workspace' % path,
            '--metadata-path': 'workspace %s, the folder of --metadata-path' % path,
            '--serving-root': 'workspace %s, the parent of --serving-root' % path,
            'default': 'the default workspace ./%s (%s)' % (DEFAULT_WORKSPACE, path),
        }[self.workspace_from]

    def with_serving_root(self, serving_root, source):
        return dataclasses.replace(self, serving_root=serving_root, serving_root_from=source)


def _given(args, name):
    value = getattr(args, name, None)
    return value is not None and value != []


def _derived_from(workspace_from):
    return {
        '--workspace': 'in --workspace',
        '--metadata-path': 'next to --metadata-path',
        '--serving-root': 'next to --serving-root',
        'default': 'in the default workspace ./%s' % DEFAULT_WORKSPACE,
    }[workspace_from]


def resolve(args, *, infer_workspace=True):
    """The Locations an argparse namespace describes (see the module docstring).

    Settings a command's parser lacks count as not given. `infer_workspace`
    False keeps the workspace at --workspace or ./workspace (what `run`, which
    writes a workspace, wants).
    """
    given = frozenset(name for name in _FLAGS if _given(args, name))
    metadata = getattr(args, METADATA_PATH, None)
    serving = getattr(args, SERVING_ROOT, None)
    if WORKSPACE in given:
        workspace, workspace_from = args.workspace, '--workspace'
    elif infer_workspace and METADATA_PATH in given:
        workspace, workspace_from = os.path.dirname(os.path.abspath(metadata)), '--metadata-path'
    elif (infer_workspace and SERVING_ROOT in given and os.path.isfile(
            metadata_path_in(os.path.dirname(os.path.abspath(serving))))):
        workspace, workspace_from = os.path.dirname(os.path.abspath(serving)), '--serving-root'
    else:
        workspace, workspace_from = DEFAULT_WORKSPACE, 'default'
    derived = _derived_from(workspace_from)

    def pick(name, default):
        if name in given:
            return getattr(args, name), flag(name)
        return default, derived

    serving_root, serving_from = pick(SERVING_ROOT, serving_root_in(workspace))
    metadata_path, metadata_from = pick(METADATA_PATH, metadata_path_in(workspace))
    capture_dir, _ = pick(CAPTURE, capture_dir_in(workspace))
    model_name = getattr(args, MODEL_NAME, None)
    if isinstance(model_name, list):
        model_name = tuple(model_name)      # --model-name repeatable: None = every model.
    elif model_name is None and not getattr(args, REPEATABLE_MODEL_NAME, False):
        model_name = DEFAULT_MODEL_NAME
    return Locations(workspace=workspace, serving_root=serving_root,
                     metadata_path=metadata_path, model_name=model_name,
                     capture_dir=capture_dir, given=given, workspace_from=workspace_from,
                     serving_root_from=serving_from, metadata_path_from=metadata_from)


def _same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def store_belongs_to(recorded_roots, serving_root):
    """Whether a store whose pushes recorded `recorded_roots` may be the store of
    `serving_root`: it recorded that root, or none at all (an empty store)."""
    roots = [r for r in recorded_roots if r]
    return not roots or any(_same_path(r, serving_root) for r in roots)


def serving_root_for_store(locations, recorded_root=None, recorded_by='ML Metadata',
                           store_is_local=True):
    """The serving root whose rollout.json belongs to the store a command reads.

    Applies only when neither --serving-root nor --workspace was given:

    * `recorded_root` (the serving root the newest push recorded in the store)
      wins when that folder exists here, unless it sits next to *another*
      metadata.sqlite: then it is that workspace's, and this store a copy of it.
    * else a local store keeps the derived root (the serving/ folder next to
      the store: the layout `run` writes);
    * else (a MySQL or gRPC store) no local rollout.json belongs to it: None.
    """
    loc = locations
    if loc.is_given(SERVING_ROOT) or loc.is_given(WORKSPACE):
        return loc
    if recorded_root and os.path.isdir(recorded_root):
        owner = os.path.dirname(os.path.abspath(recorded_root))
        other_store = (store_is_local and os.path.isfile(metadata_path_in(owner))
                       and not _same_path(metadata_path_in(owner), loc.metadata_path))
        if not other_store:
            return loc.with_serving_root(recorded_root, 'recorded in ML Metadata by %s'
                                         % recorded_by)
    if not store_is_local:
        return loc.with_serving_root(None, 'none: the store is not a local file, so no local '
                                           'rollout.json belongs to it')
    return loc


# ------------------------------------------------------------------ argparse

def add_location_options(parser, *, workspace=True, metadata=True, serving=True,
                         model_name=True, capture=False, notes=None):
    """Adds --workspace, --serving-root, --metadata-path, --model-name (and
    --capture-dir) to an argparse parser or argument group.

    Defaults stay None so `resolve` knows what was given; the help texts say
    what each defaults to. `model_name='append'`: a repeatable --model-name
    whose absence means every model. `notes`: {setting: extra help sentence}.
    """
    notes = notes or {}

    def text(name, what, default):
        note = notes.get(name)
        return '%s%s (default: %s)' % (what, '; ' + note if note else '', default)

    if workspace:
        derived = [path for path, on in (('WORKSPACE/metadata.sqlite', metadata),
                                         ('WORKSPACE/serving', serving),
                                         ('WORKSPACE/capture', capture)) if on]
        parser.add_argument(
            '--workspace', default=None, metavar='DIR',
            help=text(WORKSPACE, 'pipeline workspace (what `tfx-canary run --workspace` '
                                 'writes: pipeline outputs, ML Metadata, staged models)'
                      + ('; locations not given are inside it (%s)' % ', '.join(derived)
                         if derived else ''), './' + DEFAULT_WORKSPACE))
    if serving:
        parser.add_argument(
            '--serving-root', default=None, metavar='DIR',
            help=text(SERVING_ROOT, 'folder of the staged versions: <model>/<version>/ and '
                                    '<model>/rollout.json',
                      'WORKSPACE/serving' + ('; given only --metadata-path, the serving/ '
                                             'folder next to that file' if metadata else '')))
    if metadata:
        parser.add_argument(
            '--metadata-path', default=None, metavar='FILE',
            help=text(METADATA_PATH, 'SQLite ML Metadata store',
                      'WORKSPACE/metadata.sqlite' + ('; given only --serving-root, the '
                                                     'metadata.sqlite next to that folder '
                                                     'if there is one' if serving else '')))
    if model_name == 'append':
        parser.add_argument(
            '--model-name', action='append', default=None, metavar='NAME',
            help=text(MODEL_NAME, 'model to act on, repeatable',
                      'every model with a rollout.json'))
        parser.set_defaults(**{REPEATABLE_MODEL_NAME: True})
    elif model_name:
        parser.add_argument(
            '--model-name', default=None, metavar='NAME',
            help=text(MODEL_NAME, 'model name: its folder under the serving root',
                      DEFAULT_MODEL_NAME))
    if capture:
        parser.add_argument(
            '--capture-dir', default=None, metavar='DIR',
            help=text(CAPTURE, 'capture root: rows go to <dir>/span-N/part-*.csv',
                      'WORKSPACE/capture'))
    return parser
