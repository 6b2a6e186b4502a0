"""argparse pieces shared by every `tfx-canary` command (no tfx-canary imports)."""
import argparse
import sys
import textwrap


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """Shows real defaults only, and keeps hand-laid-out descriptions as written.

    "(default: None)" next to "default: the latest span" would contradict the
    help text, so empty defaults (None, [], False, suppressed) are not shown.
    A description or epilog with its own line breaks is printed as written
    (examples, tables); one without is wrapped to the terminal like argparse's
    default.
    """

    def _get_help_string(self, action):
        if action.default in (None, [], False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)

    def _fill_text(self, text, width, indent):
        if '\n' in text:
            return super()._fill_text(text, width, indent)   # RawDescription: as written.
        # Wrapped, but never inside a flag or path such as <serving-root>.
        return textwrap.fill(' '.join(text.split()), width, initial_indent=indent,
                             subsequent_indent=indent, break_on_hyphens=False,
                             break_long_words=False)


def add_deprecated_alias(parser, old_flag, *, dest, replacement, metavar=None):
    """A hidden `old_flag` that sets `dest` like `replacement` does, and says once
    on stderr that it is deprecated."""

    class _Deprecated(argparse.Action):
        def __call__(self, parser_, namespace, values, option_string=None):
            print('warning: %s is deprecated; use %s' % (option_string, replacement),
                  file=sys.stderr)
            setattr(namespace, self.dest, values)

    parser.add_argument(old_flag, dest=dest, action=_Deprecated, metavar=metavar,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)
