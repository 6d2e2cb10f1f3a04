"""mmroute.registry."""
