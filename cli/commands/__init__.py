"""The `outbound` subcommands, one module each, loaded lazily by cli.main."""
