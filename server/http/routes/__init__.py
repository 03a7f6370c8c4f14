"""HTTP routes, one module per dialect."""
