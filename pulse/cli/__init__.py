"""Entry points: the `pulse` command and the processes it starts."""
