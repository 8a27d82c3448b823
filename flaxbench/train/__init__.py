"""One training loop for every model: jit(lax.scan(step)) over device-resident data."""
