"""The `outbound` subcommands, one module each, loaded lazily by workers.cli."""
