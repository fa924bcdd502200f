"""A route's forward proxy toward its upstream (Kong's proxy_config; docs/rest-tools.md)."""
