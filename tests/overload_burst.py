"""Load generator for test_overload.py, run in a process of its own so it never shares the server's
interpreter lock: ROUNDS bursts of CALLERS simultaneous Predict calls of ROWS rows over grpc.aio, with a
health check every 20 ms throughout; prints JSON counts of the status codes each saw."""

from __future__ import annotations

import asyncio
import collections
import json
import sys

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lstmserve.client import to_tensor
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc

CHANNELS = 4


async def predict(stub, request, codes: collections.Counter) -> None:
    try:
        await stub.Predict(request, timeout=120)
        codes["OK"] += 1
    except grpc.aio.AioRpcError as error:
        codes[error.code().name] += 1


async def probe(channel, done: asyncio.Event, codes: collections.Counter) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    while not done.is_set():
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            codes[health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)] += 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1
        await asyncio.sleep(0.02)


async def main(address: str, callers: int, rounds: int, rows: int) -> None:
    x = np.random.default_rng(0).random((rows, 20, 1), dtype=np.float32)
    request = pb.PredictRequest(model=mpb.ModelSpec(name="classifier"), mode=mpb.PREDICTION_MODE_VALUES,
                                inputs={"": to_tensor(x)})
    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS + 1)]
    for channel in channels:
        await channel.channel_ready()
    stubs = [pb_grpc.PredictionServiceStub(channel) for channel in channels[:CHANNELS]]
    codes, health = collections.Counter(), collections.Counter()
    done = asyncio.Event()
    prober = asyncio.ensure_future(probe(channels[-1], done, health))
    for _ in range(rounds):
        await asyncio.gather(*(predict(stubs[i % CHANNELS], request, codes) for i in range(callers)))
    done.set()
    await prober
    for channel in channels:
        await channel.close()
    print(json.dumps({"predict": codes, "health": health}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
