"""Request rate limits (docs/limits.md)."""
