"""The serving runtime: plain Python over Keras and numpy, never importing grpc."""
