"""From a run to something others use: a report of it, a registered model, predictions on new data."""
