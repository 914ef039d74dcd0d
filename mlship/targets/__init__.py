"""Build targets: each takes a finished bundle directory and produces something that runs elsewhere."""
