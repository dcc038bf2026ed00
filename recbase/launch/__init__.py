"""The launch layer: the only place that imports ray (Ray Data, Ray Train, Ray Tune wiring)."""
