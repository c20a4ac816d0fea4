"""Label Studio annotation layer: server lifecycle, the HTTP client, versioned labeling configs,
idempotent push / pull, pure converters, agreement statistics and SIMULATED annotators.

Imports ``rorem_core`` types, never prefect. ``client.py`` is the only module that talks HTTP.
"""
