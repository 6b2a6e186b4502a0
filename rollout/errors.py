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


class RolloutChangedError(RolloutError):
    """A decided change whose rollout moved before it was applied.

    `rollout analyze --apply` and `rollout watch` decide on the state they
    read; another command (a person's promote, a pipeline staging a new
    canary) may change rollout.json before the decision is applied. Applying
    it anyway would, e.g., step up a canary nobody analyzed, so the
    transition compares under the lock and changes nothing instead.
    """

    def __init__(self, model_name, expected, found):
        self.expected = expected
        self.found = found
        super().__init__(
            f"{model_name}: not applied: the decision was made for "
            f"{_describe(expected)}, but rollout.json now says {_describe(found)} "
            f"(another command changed it meanwhile); analyze again")


def _describe(served):
    stable, canary, traffic = served
    if canary is None:
        return f"stable v{stable} with no canary"
    return f"stable v{stable} / canary v{canary} at {traffic}%"
