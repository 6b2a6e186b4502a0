"""Errors raised by the rollout library."""

from common.errors import TfxCanaryError


class RolloutError(TfxCanaryError):
    """A rollout problem the operator can act on.

    Messages name the file or field involved and say what to do next, because
    the CLI shows them verbatim as `error: <message>`.
    """


class StaleBaselineError(RolloutError):
    """A push whose model was judged against a stable version that no longer serves.

    Raised under the model lock before anything is copied, so nothing changes;
    the fix is to re-run the pipeline, which evaluates against the new stable.
    """

    def __init__(self, model_name, judged_against, stable_now):
        self.judged_against = judged_against
        self.stable_now = stable_now

        def name(version):
            return "no baseline" if version is None else f"stable v{version}"

        super().__init__(
            f"not pushed: the model was evaluated against {name(judged_against)}, "
            f"but {model_name} now serves {name(stable_now)} (another run or a "
            f"rollout command changed it meanwhile): re-run the pipeline to "
            f"evaluate against {name(stable_now)}")
