"""The ``memcluster`` command line."""
