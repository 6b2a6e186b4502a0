"""What RolloutController's calls return: frozen dataclasses, not string-keyed dicts.

The rollout CLI, `rollout analyze --apply`, CanaryPusher and the local runner
read these; a misspelt attribute is an AttributeError where a misspelt dict
key was a silent None (which once disabled CanaryPusher's already-serving
check). `to_dict()` gives the JSON the CLI prints with --json.
"""
import dataclasses
from typing import List, Optional


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What served before or after a transition."""
    phase: str
    stable: Optional[int]
    canary: Optional[int]
    traffic: int

    @classmethod
    def of(cls, state):
        return cls(phase=state.phase, stable=state.stable_version,
                   canary=state.canary_version, traffic=state.canary_traffic_percent)


@dataclasses.dataclass(frozen=True)
class FilesWritten:
    """The derived files a change touched: True rewritten, False already in sync,
    None not written (no KServe storage URI prefix known)."""
    models_config: Optional[bool]
    kserve_manifest: Optional[bool]


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """The ML Metadata audit of a change (`enabled` False: no store configured)."""
    enabled: bool
    execution_ids: List[int] = dataclasses.field(default_factory=list)
    error: Optional[str] = None   # the change applied, but recording it failed


@dataclasses.dataclass(frozen=True)
class TransitionResult:
    """One applied rollout transition (stage, set-traffic, promote, rollback, not-blessed)."""
    event: str                     # the history event: staged_canary, promoted, ...
    version: Optional[int]         # the version it concerns
    before: Snapshot
    after: Snapshot
    files: FilesWritten
    audit: AuditResult
    history_event: dict            # the event as appended to rollout.json
    pruned: List[int] = dataclasses.field(default_factory=list)   # stage only

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RepairResult:
    files: FilesWritten
    removed_temp_dirs: List[str]
    audit: AuditResult
    state: Snapshot


@dataclasses.dataclass(frozen=True)
class RolloutPaths:
    """The files one model's rollout reads and writes."""
    serving_root: str
    model_dir: str
    rollout_json: str
    models_config: str
    kserve_manifest: str


@dataclasses.dataclass(frozen=True)
class RolloutStatus:
    """`rollout status`: what serves, what is staged, and whether the files agree."""
    model_name: str
    phase: str
    stable_version: Optional[int]
    canary_version: Optional[int]
    canary_traffic_percent: Optional[int]    # None without a live canary
    stable_traffic_percent: Optional[int]    # None with nothing staged
    staged_versions: List[int]
    last_version: int
    last_event: Optional[dict]
    paths: RolloutPaths
    problems: List[str]                      # where models.config / the manifest / disk disagree

    @property
    def in_sync(self):
        return not self.problems

    def to_dict(self):
        return dict(dataclasses.asdict(self), in_sync=self.in_sync)
