"""The pure core: replicated zone state, commands and config. No I/O, clocks or threads."""
