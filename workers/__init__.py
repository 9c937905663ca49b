"""workers: everything that does I/O: the signaling loop, Celery app and tasks, events, CLI."""
