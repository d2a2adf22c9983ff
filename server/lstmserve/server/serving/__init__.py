"""The walk of one request inside the server: registry -> LoadedModel (signature, preparation, engine,
heads). Never imports grpc; transport/ converts the wire at both ends."""
