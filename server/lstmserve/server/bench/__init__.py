"""`lstmserve bench`: the server measured against its limits (in-process model, bare gRPC) in one run."""
