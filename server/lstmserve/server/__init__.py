"""lstmserve server: loads Keras recurrent models from .h5 files and answers gRPC predictions."""
