"""`tfx-canary kfp run-local`: a compiled KFP package (or Vertex PipelineJob) run
on this machine by kfp.local's own orchestrator, each container command run as
a process of this environment instead of a container.

    package.py  read the package; runtime arguments; where the pod's volumes are here
    adapt.py    the two executor-input adaptations TFX's IR needs under kfp.local
    runner.py   the kfp.local session, the process task handler, progress and logs

What stays kfp.local's: DAG order, executor input construction, placeholder
resolution, importer handling, output collection. See docs/kubeflow.md
("Smoke-test a package locally") for what is adapted and why.
"""
from runners.kfp_local.package import KfpLocalError, LocalPackage, load_package
from runners.kfp_local.runner import KfpLocalTaskFailed, LocalRun, TaskRun, run_local

__all__ = ['KfpLocalError', 'KfpLocalTaskFailed', 'LocalPackage', 'LocalRun', 'TaskRun',
           'load_package', 'run_local']
