"""Errors raised by the lineage library.

All are TfxCanaryError subclasses, so the CLI prints them as one
`error: <message>` line and exits 2. Messages name the store, version or flag
involved and what to do, because the operator sees only that line.
"""

from common.errors import TfxCanaryError


class LineageError(TfxCanaryError):
    """A lineage question that cannot be answered as asked."""


class StoreUnavailableError(LineageError):
    """The ML Metadata store cannot be opened or stopped answering."""


class PipelineNotFoundError(LineageError):
    """The store holds no runs of the requested pipeline (or none at all)."""


class NotFoundError(LineageError):
    """An unknown model version, artifact id or rollout role."""
