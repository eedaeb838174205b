"""Pure per-user logic: settings, event validation, state, churn, event-time merge, recommenders.

No Faust, no Kafka client, no ONNX Runtime here: everything is unit-testable alone."""
