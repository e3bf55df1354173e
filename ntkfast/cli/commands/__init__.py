"""One module per ``ntkfast`` subcommand, each with ``run(args) -> int``."""
