"""Azure Functions blueprints: thin adapters over shared_code."""
