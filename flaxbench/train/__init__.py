"""One training loop for every model: each epoch one jit(lax.scan(step)) over device-resident data on GPU/TPU;
on CPU (spec.train.epoch_loop='auto') a jitted step per batch, and with spec.train.data_placement='host' batches
sent from host memory."""
