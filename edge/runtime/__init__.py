"""What runs on a device: backends, detection, tracking, attributes, sources, sinks."""
