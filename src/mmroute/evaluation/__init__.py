"""mmroute.evaluation."""
