"""meshems: an edge energy-management mesh of gateways that govern a microgrid over Raft."""

__version__ = "0.1.0"
