"""Imports every command module so that each registers itself on `main`."""

# One line per command module (each decorates itself onto `darkbp.cli.main`).
from darkbp.cli import summary  # noqa: F401,E402
from darkbp.cli import data  # noqa: F401,E402
from darkbp.cli import gradcheck  # noqa: F401,E402
from darkbp.cli import train  # noqa: F401,E402
from darkbp.cli import evaluate  # noqa: F401,E402
from darkbp.cli import export  # noqa: F401,E402
from darkbp.cli import predict  # noqa: F401,E402
from darkbp.cli import plot  # noqa: F401,E402
from darkbp.cli import detect  # noqa: F401,E402
from darkbp.cli import map  # noqa: F401,E402
