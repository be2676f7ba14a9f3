"""Adapters: one outside thing each (pysyncobj, files, HTTP), translated to core types."""
