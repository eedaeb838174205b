"""Tools around the service: record/replay, dataset loading, synthetic workloads, the demo."""
