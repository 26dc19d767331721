"""Input drift: the features of an input tensor, the sketches gateways keep of them, the
reference profiles they are compared with, the statistics comparing them, and their store."""
