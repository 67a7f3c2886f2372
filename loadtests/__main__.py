"""``python -m loadtests loadtest PROFILE --host URL``: the load-test CLI on its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from loadtests.cli import add_commands
from vigil.errors import VigilError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests")
    parser.add_argument(
        "--config", help="config file (default: $VIGIL_CONFIG or config/vigil.yaml)"
    )
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        rv: int = args.func(args)
    except VigilError as exc:
        print(f"vigil: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rv


if __name__ == "__main__":
    sys.exit(main())
