"""Fine-tuning tasks: framework-free data, features and metrics (tasks.data, tasks.metrics)."""
