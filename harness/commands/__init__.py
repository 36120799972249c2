"""The CLI's commands, one module each: ``add_parser(commands)`` adds its subcommand and options,
``main(args)`` runs it and returns the exit code. ``COMMANDS`` lists them in the order ``--help`` shows."""

COMMANDS = ("run", "search", "measure", "regress", "report", "tables", "store", "farm", "firmware", "mlperf-dataset", "doctor")
