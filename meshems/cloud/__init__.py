"""The cloud side of meshems: services that run next to the broker, not on a gateway (the
telemetry ingest today). They use core and adapters, never the node daemon."""
