"""mmroute.export."""
