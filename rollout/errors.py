"""Errors raised by the rollout library."""

from pipeline.errors import TfxCanaryError


class RolloutError(TfxCanaryError):
    """A rollout problem the operator can act on.

    Messages name the file or field involved and say what to do next, because
    the CLI shows them verbatim as `error: <message>`.
    """
