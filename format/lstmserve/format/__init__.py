"""The .h5 contract the trainer writes and the server reads: lstmserve's metadata and data preparation.

numpy and h5py only: no TensorFlow, no gRPC, so either side can depend on it alone.
"""
