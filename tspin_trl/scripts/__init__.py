"""Command-line scripts shipped with the package (`tspin-trl train`)."""
