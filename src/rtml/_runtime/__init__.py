"""Per-process core client: object references, task specs, the driver and worker clients."""
