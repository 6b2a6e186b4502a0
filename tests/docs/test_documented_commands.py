"""Every `tfx-canary ...` command line shown in README.md and docs/ parses.

Documented commands must not silently rot when a flag is renamed: each one is
parsed by the real CLI parser (nothing runs), with line continuations joined
and the trailing `# comment` dropped.
"""
import glob
import os
import re
import shlex

import pytest

from runners import cli
from tests.conftest import PROJECT_ROOT

DOCS = [os.path.join(PROJECT_ROOT, 'README.md')] + sorted(
    glob.glob(os.path.join(PROJECT_ROOT, 'docs', '**', '*.md'), recursive=True))


def _code_blocks(text):
    return re.findall(r'^```[^\n]*\n(.*?)^```', text, flags=re.M | re.S)


def documented_commands():
    commands = []
    for path in DOCS:
        with open(path, encoding='utf-8') as f:
            text = f.read()
        for block in _code_blocks(text):
            joined = re.sub(r'\\\n\s*', ' ', block)
            for line in joined.splitlines():
                line = re.sub(r'^\s*\$\s+', '', line).strip()
                if line.startswith('tfx-canary '):
                    words = shlex.split(line, comments=True)
                    commands.append(pytest.param(words[1:], id='%s: %s' % (
                        os.path.relpath(path, PROJECT_ROOT), ' '.join(words[1:])[:70])))
    return commands


COMMANDS = documented_commands()


def test_the_docs_show_commands_at_all():
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize('argv', COMMANDS)
def test_documented_command_parses(argv):
    try:
        args = cli.build_parser().parse_args(argv)
    except SystemExit as e:  # argparse's way of refusing
        pytest.fail('documented command does not parse (exit %s): tfx-canary %s'
                    % (e.code, ' '.join(argv)))
    assert callable(args.func)
