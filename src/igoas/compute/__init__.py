"""The runtime policy: which device, precision and memory format a network runs with, and
the processes that share the work (`Runtime`, `resolve_device`, `speed`, `distributed`)."""
