"""The `tuner` command: parses, calls one library function per command, prints with Rich."""
