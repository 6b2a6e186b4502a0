"""Imports point down the layers (README "Architecture").

Every .py file under our packages is parsed with `ast` (module-level and
function-local imports alike, relative ones resolved) and each import of one
of our packages is checked against the layer it comes from:

    common      -> nothing of ours               (the bottom layer)
    modules     -> nothing of ours               (model code, loaded by module path)
    rollout     -> common
    serving, lineage, components -> common, rollout (not each other)
    pipeline    -> all of the above, and modules
    runners and every <package>/cli.py -> anything (the CLI layer, on top)

Nothing below the CLI layer may import a CLI module or runners/.
"""
import ast
import os

import pytest

from tests.conftest import PROJECT_ROOT

CLI = 'cli'   # The layer of runners/ and of every <package>/cli.py.
# Which layers each layer may import (its own package always included).
ALLOWED = {
    'common': {'common'},
    'modules': {'modules'},
    'rollout': {'common', 'rollout'},
    'serving': {'common', 'rollout', 'serving'},
    'lineage': {'common', 'rollout', 'lineage'},
    'components': {'common', 'rollout', 'components'},
    'pipeline': {'common', 'modules', 'rollout', 'serving', 'lineage', 'components',
                 'pipeline'},
    'runners': None,   # None: anything.
    CLI: None,
}
PACKAGES = sorted(set(ALLOWED) - {CLI})


def layer_of(module):
    """'rollout.state' -> 'rollout'; 'serving.cli', 'runners.x' -> the CLI layer."""
    parts = module.split('.')
    if parts[0] == 'runners' or parts[-1] == 'cli':
        return CLI
    return parts[0]


def module_name(root, path):
    rel = os.path.relpath(path, root)[:-len('.py')].split(os.sep)
    if rel[-1] == '__init__':
        rel = rel[:-1]
    return '.'.join(rel)


def _is_module(root, dotted):
    base = os.path.join(root, *dotted.split('.'))
    return os.path.isfile(base + '.py') or os.path.isfile(os.path.join(base, '__init__.py'))


def imported_modules(root, path):
    """[(line, dotted module)] for every import in the file, relative ones resolved.

    `from pkg import name` counts as `pkg.name` when that is a module (so
    `from serving import cli` is seen as the CLI module it is).
    """
    name = module_name(root, path)
    package = name if path.endswith('__init__.py') else name.rpartition('.')[0]
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.')) - (node.level - 1)]
                base = '.'.join(anchor + ([base] if base else []))
            for alias in node.names:
                full = base + '.' + alias.name if base else alias.name
                found.append((node.lineno, full if _is_module(root, full) else base))
        elif (isinstance(node, ast.Call) and getattr(node.func, 'attr', None) == 'import_module'
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))   # importlib.import_module('x')
    return found


def upward_imports(root, packages=PACKAGES):
    """['file:line: <layer> imports <module> (<layer>; <layer> may import ...)'], sorted."""
    problems = []
    for package in packages:
        for folder, _dirs, files in os.walk(os.path.join(root, package)):
            for file_name in sorted(files):
                if not file_name.endswith('.py'):
                    continue
                path = os.path.join(folder, file_name)
                importer = layer_of(module_name(root, path))
                allowed = ALLOWED[importer]
                if allowed is None:
                    continue
                for line, target in imported_modules(root, path):
                    if target.split('.')[0] not in ALLOWED:
                        continue   # Not ours: the standard library, TFX, ...
                    layer = layer_of(target)
                    if layer not in allowed:
                        problems.append('%s:%d: %s imports %s (layer %s; %s may import only %s)'
                                        % (os.path.relpath(path, root), line, importer, target,
                                           layer, importer, ', '.join(sorted(allowed))))
    return sorted(problems)


def test_imports_point_down():
    problems = upward_imports(PROJECT_ROOT)
    assert not problems, 'upward imports:\n  ' + '\n  '.join(problems)


def test_every_package_has_a_layer():
    """A new top-level package must be placed in the layers before it is used."""
    ours = sorted(d for d in os.listdir(PROJECT_ROOT)
                  if os.path.isfile(os.path.join(PROJECT_ROOT, d, '__init__.py'))
                  and d not in ('tests', 'bench'))
    assert ours == PACKAGES


def _tree(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / '__init__.py').touch()
    return str(tmp_path)


@pytest.mark.parametrize('files,expected', [
    # Function-local, relative, from-import of a module, import_module: all seen.
    ({'rollout/a.py': 'def f():\n    from serving import stats\n', 'serving/stats.py': ''},
     ['rollout/a.py:2: rollout imports serving.stats (layer serving; rollout may import '
      'only common, rollout)']),
    ({'common/a.py': 'from ..pipeline import errors\n', 'pipeline/errors.py': ''},
     ['common/a.py:1: common imports pipeline.errors (layer pipeline; common may import '
      'only common)']),
    ({'rollout/analyze.py': 'from .cli import main\n', 'rollout/cli.py': ''},
     ['rollout/analyze.py:1: rollout imports rollout.cli (layer cli; rollout may import '
      'only common, rollout)']),
    ({'rollout/b.py': 'from .. import serving\n'},
     ['rollout/b.py:1: rollout imports serving (layer serving; rollout may import only '
      'common, rollout)']),
    ({'serving/client.py': 'import modules.features\n'},
     ['serving/client.py:1: serving imports modules.features (layer modules; serving may '
      'import only common, rollout, serving)']),
    ({'lineage/a.py': 'import importlib\nimportlib.import_module("components.x")\n'},
     ['lineage/a.py:2: lineage imports components.x (layer components; lineage may import '
      'only common, lineage, rollout)']),
    # A CLI module is the top layer even inside a lower package.
    ({'rollout/analyze.py': 'from rollout import cli\n', 'rollout/cli.py': ''},
     ['rollout/analyze.py:1: rollout imports rollout.cli (layer cli; rollout may import '
      'only common, rollout)']),
    ({'serving/cli.py': 'from pipeline.configs import X\n', 'pipeline/configs.py': '',
      'pipeline/p.py': 'from components.x import Y\nfrom modules import model\n',
      'rollout/b.py': 'import json\nfrom common import locations\n'}, []),
])
def test_the_rule_finds_upward_imports(tmp_path, files, expected):
    assert upward_imports(_tree(tmp_path, files)) == expected
