"""Tools for long batch scripts: ``python -m bridge batch`` and the ``scale`` script."""
