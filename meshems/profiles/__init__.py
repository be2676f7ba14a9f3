"""Built-in device profiles (YAML register maps) shipped as package data; see `adapters.profiles`."""
