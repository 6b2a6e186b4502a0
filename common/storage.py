"""Reading files by path or URI: local paths directly, object stores through TFX's fileio.

Serving roots and pipeline roots may live on gs:// (Kubeflow, Vertex). TFX's
`tfx.dsl.io.fileio` reads those, but importing it imports TensorFlow (seconds),
so it is imported only when a path really is a URI: local commands stay fast.
"""
import glob as _glob
import os
import re

_SCHEME = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*://')
_FILE_SCHEME = 'file://'


def is_remote(path):
    """True for an object-store URI (gs://, s3://, ...); file:// and plain paths are local."""
    path = os.fspath(path)
    return bool(_SCHEME.match(path)) and not path.startswith(_FILE_SCHEME)


def local_path(uri):
    """The filesystem path of a local artifact URI that exists, else None."""
    if not uri:
        return None
    uri = os.fspath(uri)
    if uri.startswith(_FILE_SCHEME):
        uri = uri[len(_FILE_SCHEME):]
    if is_remote(uri):
        return None
    return uri if os.path.exists(uri) else None


def _fileio():
    from tfx.dsl.io import fileio  # pylint: disable=import-outside-toplevel
    return fileio


def exists(path):
    path = os.fspath(path)
    return _fileio().exists(path) if is_remote(path) else os.path.exists(path)


def isfile(path):
    path = os.fspath(path)
    if is_remote(path):
        fileio = _fileio()
        return fileio.exists(path) and not fileio.isdir(path)
    return os.path.isfile(path)


def open_binary(path):
    """A binary file object for reading (use as a context manager)."""
    path = os.fspath(path)
    return _fileio().open(path, 'rb') if is_remote(path) else open(path, 'rb')


def read_bytes(path):
    with open_binary(path) as f:
        return f.read()


def glob(pattern):
    """Sorted matches of a glob pattern, local or remote."""
    pattern = os.fspath(pattern)
    return sorted(_fileio().glob(pattern) if is_remote(pattern) else _glob.glob(pattern))
