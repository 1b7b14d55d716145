"""sbx's data plane: vault, view builders, isolation runtimes, spawner and export airlock."""
