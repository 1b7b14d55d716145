"""sbx's control plane: configuration, domain services, the API, the console and the CLI."""
