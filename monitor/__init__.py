"""novita-monitor: watch a Novita AI GPU-cloud account and keep its cost under control."""

__version__ = "0.1.0"
