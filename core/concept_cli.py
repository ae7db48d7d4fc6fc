"""CLI commands for unlearn-concept (Stable Diffusion concept forgetting); registered by core.cli."""


def add_commands(subparsers) -> None:
    """Add this area's subcommands to `python -m core.cli`."""
