"""Reading, executing and analysing notebooks."""
