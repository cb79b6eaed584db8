"""Every SQL statement of the package, each written once, returning named rows (one module per table)."""
