"""Pipeline stages: each ``run(ctx) -> dict`` reads earlier artifacts from the run directory and writes its own."""
