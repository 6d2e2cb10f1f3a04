"""mmroute.features."""
