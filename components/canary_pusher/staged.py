"""Pure helpers for the CanaryPusher: is this model already serving?"""
from rollout import staging


def already_serving(src_dir, serving_root, model_name, versions):
    """The version among `versions` (stable/canary) holding the same export as src_dir, else None.

    A pipeline re-run that re-evaluates an unchanged model (its baseline moved)
    re-blesses it, and a re-run that retrains on the same data, code and
    settings (no cache: kfp.local, --no-cache) makes the same model again, up
    to float round-off (staging.same_model); staging either again would make a
    duplicate canary of the model already serving.
    """
    for version in versions:
        if version is not None and staging.same_model(
                src_dir, staging.version_dir(serving_root, model_name, version)):
            return version
    return None
