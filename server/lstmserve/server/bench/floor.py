"""The transport floor: a gRPC server of the same kind as lstmserve's answering with a canned response.

It parses each request as the real server does and returns a response of the real size, with no
model, no validation and no batching: what any Python gRPC server pays before doing work.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent import futures

import grpc

from lstmserve.server.process import freeze_heap, tune_for_serving
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc
from lstmserve.v1 import session_service_pb2 as spb
from lstmserve.v1 import session_service_pb2_grpc as spb_grpc


class CannedServicer(pb_grpc.PredictionServiceServicer):
    def __init__(self, response: pb.PredictResponse) -> None:
        self.response = response

    async def Predict(self, request: pb.PredictRequest, context) -> pb.PredictResponse:
        return self.response


class CannedStreams(spb_grpc.SessionServiceServicer):
    """Streaming sessions' floor: every message of a stream answered with one canned message."""

    def __init__(self, response: spb.StreamResponse) -> None:
        self.response = response

    async def StreamSession(self, requests, context):
        async for _ in requests:
            yield self.response


async def serve(response_path: str, workers: int, stream_response: str | None = None) -> None:
    with open(response_path, "rb") as f:
        response = pb.PredictResponse.FromString(f.read())
    # The same construction as transport/server.py (grpc.aio, coroutine handlers), minus
    # everything that is not transport.
    server = grpc.aio.server(futures.ThreadPoolExecutor(max_workers=workers),
                             options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_PredictionServiceServicer_to_server(CannedServicer(response), server)
    if stream_response:
        with open(stream_response, "rb") as f:
            canned = spb.StreamResponse.FromString(f.read())
        spb_grpc.add_SessionServiceServicer_to_server(CannedStreams(canned), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    freeze_heap()  # as `lstmserve serve` does once its models are loaded
    print(port, flush=True)
    # Runs until the benchmark closes our stdin (or dies).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("response")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--stream-response", help="a serialized StreamResponse: also serve streams")
    args = parser.parse_args()
    tune_for_serving()  # as `lstmserve serve` does
    asyncio.run(serve(args.response, args.workers, args.stream_response))
