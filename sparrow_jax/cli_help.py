"""The `--help` of every command line: its description as written (module docstrings hold example commands
and their own line breaks) and each option's default, in one form, `(default: X)`.

    p = ArgumentParser(prog="python -m infer", description=__doc__)

Subcommand parsers (`p.add_subparsers().add_parser(...)`) are built with the same class, so they show
their defaults too.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter, without its noise: no `(default: None)` or `(default: False)`
    (an unset option or an off flag says nothing; where unset means something, the help text says what, as
    `(default: ...)`), and a list default is written the way the option takes it, comma-separated."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == argparse.SUPPRESS  # not `in`: 0 == False
        if ("%(default)" in text or "(default:" in text or unset
                or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        if isinstance(default, (list, tuple)):
            shown = ",".join(str(x) for x in default).replace("%", "%%")  # the help text is %-formatted
            return f"{text} (default: {shown})".strip()
        return f"{text} (default: %(default)s)".strip()


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser with HelpFormatter; its subcommand parsers are of this class (argparse's
    default for `add_subparsers`), so every level of a command shows its defaults."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
