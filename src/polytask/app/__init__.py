"""The application layer: from a run configuration (YAML at the CLI edge) to data, a model, a
Trainer and a fitted model that predicts from raw tables."""
