"""The ``celeriac`` command line (click)."""
