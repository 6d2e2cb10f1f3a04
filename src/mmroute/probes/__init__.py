"""mmroute.probes."""
