"""EXAMPLES of retention-sweep id sources (ops/sweeps.example.toml). Not production code."""
