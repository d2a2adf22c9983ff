"""The walk of one model file: read once and check (modelfile, safety), translate old Keras (compat/),
build (build), then engine and LoadedModel (load). Never imports grpc."""
