"""The 95598 hotline IVR: call flow, dialog engine, session driver, transports and the CLI."""

__version__ = "0.1.0"
