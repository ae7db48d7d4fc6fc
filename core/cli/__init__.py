"""The `salun` command (also `python -m core.cli`): one subcommand module per family.

    classify.py    train, unlearn, mask
    generation.py  train-gen, unlearn-gen, eval-gen
    concept.py     unlearn-concept
    warm.py        warm (the reference runs the app serves at once, core/warm.py)
    common.py      progress bar, shared options, exit status
    commands.py    the parser and `main(argv)`
"""

from core.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
