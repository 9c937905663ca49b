"""The queue contract: the dial message schedulers publish and how the worker takes it."""
