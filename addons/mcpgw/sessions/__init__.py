"""Session binding (binding.py), who a caller is (caller.py), and its policy settings
(settings.py, `gateway.sessions`)."""
