"""mmroute.tracking."""
