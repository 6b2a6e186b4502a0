"""Pure helpers for the CanaryPusher: is this model already serving?"""
from rollout import staging


def already_serving(src_dir, serving_root, model_name, versions):
    """The version among `versions` (stable/canary) holding the same export as src_dir, else None.

    A pipeline re-run that re-evaluates an unchanged model (its baseline moved)
    re-blesses it; staging it again would make a duplicate canary of the model
    already serving.
    """
    src = staging.saved_model_fingerprint(src_dir)
    if src is None:
        return None
    for version in versions:
        if version is not None and staging.saved_model_fingerprint(
                staging.version_dir(serving_root, model_name, version)) == src:
            return version
    return None
