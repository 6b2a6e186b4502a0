"""tfx-canary: retrain a TFX model, prove it against the one serving, stage it as a canary."""
from setuptools import find_packages, setup

setup(
    name='tfx-canary',
    version='0.1.0',
    description='TFX pipeline that retrains, evaluates against the serving baseline '
                'and stages blessed models as canary versions',
    python_requires='>=3.10,<3.12',
    packages=find_packages(include=['common', 'common.*', 'pipeline', 'pipeline.*',
                                    'components', 'components.*', 'modules', 'modules.*',
                                    'runners', 'runners.*', 'rollout', 'rollout.*',
                                    'lineage', 'lineage.*', 'serving', 'serving.*']),
    package_data={'rollout': ['default_policy.yaml']},
    # The TFX stack is pinned in requirements/lock.txt and installed from it
    # (see the Makefile); these are the direct dependencies for reference.
    install_requires=[
        'tfx[kfp]==1.16.0',
        'tf-keras==2.16.0',
        'tensorflow-serving-api==2.16.1',
        'pyyaml',
    ],
    entry_points={'console_scripts': ['tfx-canary=runners.cli:main']},
)
