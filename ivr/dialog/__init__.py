"""The dialog engine: events in, actions out, no I/O."""
