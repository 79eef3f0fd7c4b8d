"""Code shared by every memcluster process: errors, config, clocks and versions."""

__version__ = "0.1.0"
