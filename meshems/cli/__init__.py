"""The `meshems` command's entry point: `main(argv)` parses, runs the command and turns a
MeshemsError into its stderr line and exit code (0 ok, 1 failed, 2 usage or config, 130 ^C).

The tree is `cli.parser`, the commands one module per group, their output `cli.output`.
Importing it loads nothing heavy.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from meshems.cli.parser import build_parser, command_of
    from meshems.core.errors import MeshemsError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_of(argv)).parse_args(argv)
    try:
        return int(args.run(args))
    except MeshemsError as exc:
        from meshems.cli.output import print_error

        print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
