"""mmroute.data."""
