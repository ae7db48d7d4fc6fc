"""Command line over core/: every experiment the app runs, headless.

    python -m core.cli train | unlearn | mask | audit | train-gen | unlearn-gen | eval-gen | unlearn-concept | runs | warm

Errors a user can cause print one line on stderr and exit with status 2. With --json the last line
of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import audit, classify, concept, generation, runs, sweep, warm
from core.cli.checks import OneLineParser, check_options, json_line, operator_limits
from core.cli.common import EXIT_USER_ERROR, plugin_specs
from core.errors import CancelledError, SalunError


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m core.cli", description="SalUn Lab: saliency unlearning, headless.")
    sub = parser.add_subparsers(dest="command", required=True)
    classify.add_commands(sub)
    generation.add_commands(sub)
    concept.add_commands(sub)
    audit.add_commands(sub)
    sweep.add_commands(sub)
    runs.add_commands(sub)
    warm.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # plugins first: their methods bring their own --flags to the parser
        from core.methods import load_env_plugins, load_plugins

        load_env_plugins()
        load_plugins(plugin_specs(argv))
        parser = build_parser()
    except SalunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    args = parser.parse_args(argv)
    try:
        check_options(args, operator_limits())  # every number, path and limit, before any work starts
        summary = args.func(args)
        line = json_line(summary)  # refuses a NaN or infinite metric: no command exits 0 with one
    except SalunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except CancelledError:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; nothing was saved", file=sys.stderr)
        return 130
    if args.json:
        print(line)
    return getattr(args, "exit_status", 0)  # sweep: 1 when some runs failed
