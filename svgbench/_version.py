"""svgbench's version: one place, read by the package facade and by the records (`runner.code_version`)."""

__version__ = "0.1.0"
