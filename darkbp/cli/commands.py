"""Imports every command module so that each registers itself on `main`."""

# One line per command module (each decorates itself onto `darkbp.cli.main`).
