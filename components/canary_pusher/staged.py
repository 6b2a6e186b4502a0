"""Pure helpers for the CanaryPusher: is this model already serving?"""
import os

# TF >= 2.9 writes fingerprint.pb (checksums of graph, signatures, variables) into
# every SavedModel; it is identical for identical exports. saved_model.pb is the fallback.
_IDENTITY_FILES = ('fingerprint.pb', 'saved_model.pb')


def _identity(model_dir):
    for name in _IDENTITY_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            with open(path, 'rb') as f:
                return name, f.read()
    return None


def already_serving(src_dir, serving_root, model_name, versions):
    """The version among `versions` (stable/canary) holding the same export as src_dir, else None.

    A pipeline re-run that re-evaluates an unchanged model (its baseline moved)
    re-blesses it; staging it again would make a duplicate canary of the model
    already serving.
    """
    src = _identity(src_dir)
    if src is None:
        return None
    for version in versions:
        if version is not None and _identity(
                os.path.join(serving_root, model_name, str(version))) == src:
            return version
    return None
