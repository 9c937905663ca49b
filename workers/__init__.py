"""workers: everything that does I/O: signaling loop, Celery app and tasks, events, CLI, simulator."""
