"""`scripts/soak`: a server under a mixed, partly hostile workload for a bounded time."""
