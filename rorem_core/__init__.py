"""rorem_core: the ML of rorem-loop (data formats, synthetic data, models, losses, training,
inference, metrics and one module per pipeline stage). Imports neither prefect nor label_studio_sdk."""

__version__ = "0.1.0"
