"""tierflight: an Arrow Flight SQL analytics server with exact routing over hot, warm and cold tiers."""

__version__ = "0.1.0"
