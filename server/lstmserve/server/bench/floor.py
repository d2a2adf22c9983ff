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

from lstmserve.client.tensors import fill_tensor, from_tensor
from lstmserve.server.process import freeze_heap, tune_for_serving
from lstmserve.server.transport.session_wire import steps_from_wire
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


class DecodingStreams(CannedStreams):
    """The floor plus the wire work every step needs whatever the model: each step's tensors decoded
    into arrays, and an answer built around the canned one's outputs, as the server encodes its own
    (no session, no model). What lies between the two floors is the protobuf and numpy cost of the
    messages themselves."""

    def __init__(self, response: spb.StreamResponse) -> None:
        super().__init__(response)
        self.outputs = {name: from_tensor(t) for name, t in response.step.outputs.items()}

    async def StreamSession(self, requests, context):
        async for request in requests:
            if request.WhichOneof("message") != "step":
                yield self.response
                continue
            steps_from_wire(request.step)  # the server's own decoding of a step
            answer = spb.StreamResponse()
            step, canned = answer.step, self.response.step
            step.session_id, step.position, step.answered = canned.session_id, canned.position, 1
            for name, array in self.outputs.items():
                fill_tensor(step.outputs[name], array)
            yield answer


async def serve(response_path: str, workers: int, stream_response: str | None = None,
                decode_streams: bool = False) -> None:
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
        streams = DecodingStreams(canned) if decode_streams else CannedStreams(canned)
        spb_grpc.add_SessionServiceServicer_to_server(streams, server)
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
    parser.add_argument("--decode-streams", action="store_true",
                        help="decode each streamed step and build its answer (DecodingStreams)")
    args = parser.parse_args()
    tune_for_serving()  # as `lstmserve serve` does
    asyncio.run(serve(args.response, args.workers, args.stream_response, args.decode_streams))
