"""Kong's request-validator on a route: content type, parameters and body (docs/kong.md)."""
