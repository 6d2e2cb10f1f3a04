"""mmroute."""
__version__ = "0.1.0"
