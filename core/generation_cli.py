"""CLI commands for unlearn-gen / train-gen (class-conditional diffusion); registered by core.cli."""


def add_commands(subparsers) -> None:
    """Add this area's subcommands to `python -m core.cli`."""
