"""What keys every cache and stored cell: fingerprints of code, data and weights."""
