"""Bodies of `vigil` subcommands that live outside pipeline/cli.py (registered in its COMMANDS table)."""
