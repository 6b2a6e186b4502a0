"""The one exception type every tfx-canary command turns into a single clear error line."""


class TfxCanaryError(Exception):
    """An error the user can act on: the message names the file/field and the fix.

    The CLI prints `error: <message>` and exits non-zero instead of a traceback.
    Every package's own errors (RolloutError, LineageError, ConfigError, ...)
    derive from it, which is why it lives in the bottom layer.
    """
