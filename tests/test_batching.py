"""Dynamic batching: every caller gets exactly its own rows, whatever else shares the queue."""

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import keras
import modelzoo
import numpy as np
import pytest
from conftest import load
from engines import GatedEngine, WrappedEngine

from lstmserve.client import Client, LstmserveError
from lstmserve.server.engine.base import BatchConfig
from lstmserve.server.engine.batcher import Batcher
from lstmserve.server.errors import ModelFailed, Overloaded
from lstmserve.v1 import stats_pb2 as spb
from lstmserve.v1 import stats_pb2_grpc as spb_grpc


def burst(batcher: Batcher, gate: GatedEngine, requests: list[list[np.ndarray]]) -> list:
    """Run the first request alone, queue the others behind it, then let them all through."""
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(batcher.predict, requests[0])]
        assert gate.entered.wait(30)
        futures += [pool.submit(batcher.predict, r) for r in requests[1:]]
        while len(batcher._queue) < len(requests) - 1:
            threading.Event().wait(0.005)
        gate.release.set()
        return [f.exception() or f.result() for f in futures]


def assert_answers_are_the_models(path, requests: list, answers: list) -> None:
    """Each single-input request's answer equals tf-keras's on the same rows."""
    for (x,), (y,) in zip(requests, answers):
        np.testing.assert_allclose(y, modelzoo.reference(path, x)[0], rtol=1e-5, atol=1e-6)


def batch_of(rows: int, timesteps: int = 1, start: float = 0.0) -> np.ndarray:
    return (start + np.arange(rows * timesteps, dtype=np.float32) / 100).reshape(rows, timesteps, 1)


@pytest.mark.unit
def test_mixed_batch_sizes_are_split_back_to_their_callers(loaded_seed, seed_h5):
    gate = GatedEngine(loaded_seed.engine.engine)
    batcher = Batcher(gate, BatchConfig(max_batch=64), "seed")
    sizes = [2, 1, 5, 3, 7, 1, 4]
    requests = [[batch_of(n, start=i)] for i, n in enumerate(sizes)]
    answers = burst(batcher, gate, requests)
    assert gate.batches == [2, sum(sizes[1:])]  # the six queued requests ran as one batch
    assert_answers_are_the_models(seed_h5, requests, answers)
    stats = batcher.stats()
    assert (stats.requests, stats.rows, stats.batches) == (7, sum(sizes), 2)
    batcher.close()


@pytest.mark.unit
def test_batches_are_cut_at_max_batch_rows(loaded_seed, seed_h5):
    gate = GatedEngine(loaded_seed.engine.engine)
    batcher = Batcher(gate, BatchConfig(max_batch=8), "seed")
    requests = [[batch_of(n, start=i)] for i, n in enumerate([1, 5, 3, 4, 2, 20])]
    answers = burst(batcher, gate, requests)
    # 5+3 | 4+2 and 2 rows of the 20: a request larger than max_batch fills the room left, then runs in
    # chunks of at most max_batch rows; one that fits in a batch is never split.
    assert gate.batches == [1, 8, 8, 8, 8, 2]
    assert_answers_are_the_models(seed_h5, requests, answers)
    batcher.close()


@pytest.mark.unit
def test_a_failing_batch_fails_only_the_request_that_fails_alone(loaded_seed, seed_h5):
    gate = GatedEngine(loaded_seed.engine.engine, poison=66.0)
    batcher = Batcher(gate, BatchConfig(), "seed")
    requests = [[batch_of(2)], [batch_of(3, start=1)], [np.full((2, 1, 1), 66.0, np.float32)],
                [batch_of(4, start=2)]]
    answers = burst(batcher, gate, requests)
    assert isinstance(answers[2], ModelFailed)
    assert "model 'seed' failed to run inputs of shape [[2, 1, 1]]" in str(answers[2])
    assert "internal detail" not in str(answers[2])
    for index in (0, 1, 3):
        x = requests[index][0]
        np.testing.assert_allclose(answers[index][0], modelzoo.reference(seed_h5, x)[0], rtol=1e-5, atol=1e-6)
    assert batcher.stats().failed_batches == 2  # the shared batch, then the poisoned request alone
    batcher.close()


@pytest.mark.unit
def test_free_timesteps_are_grouped_by_length_not_padded(tmp_path):
    keras.utils.set_random_seed(6)
    path = modelzoo.save(keras.Sequential([keras.Input((None, 1)), keras.layers.LSTM(4),
                                           keras.layers.Dense(1)]), tmp_path / "free.h5")
    model = load(path, "free")
    gate = GatedEngine(model.engine.engine)
    batcher = Batcher(gate, BatchConfig(), "free")
    lengths = [4, 3, 5, 3, 5, 3]
    requests = [[batch_of(2, t, start=i)] for i, t in enumerate(lengths)]
    answers = burst(batcher, gate, requests)
    assert gate.batches == [2, 6, 4]  # one run per length: 3, 3, 3 together; 5, 5 together
    assert_answers_are_the_models(path, requests, answers)
    batcher.close()


@pytest.mark.unit
def test_a_full_queue_refuses_with_overloaded(loaded_seed):
    gate = GatedEngine(loaded_seed.engine.engine)
    batcher = Batcher(gate, BatchConfig(queue_capacity=2), "seed")
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(batcher.predict, [batch_of(1)])]
        assert gate.entered.wait(30)
        futures += [pool.submit(batcher.predict, [batch_of(1)]) for _ in range(2)]
        while len(batcher._queue) < 2:
            threading.Event().wait(0.005)
        with pytest.raises(Overloaded, match=r"model 'seed' has 2 requests queued \(capacity 2\)"):
            batcher.predict([batch_of(1)])
        gate.release.set()
        assert all(f.result()[0].shape == (1, 1) for f in futures)
    assert batcher.stats().rejected == 1
    batcher.close()


@pytest.mark.unit
def test_max_delay_gathers_requests_that_arrive_later(loaded_seed):
    batcher = Batcher(WrappedEngine(loaded_seed.engine.engine), BatchConfig(max_batch=4, max_delay_s=5.0),
                      "seed")
    with ThreadPoolExecutor(4) as pool:
        # A full batch (4 rows) starts at once; nothing waits the 5 s delay.
        futures = [pool.submit(batcher.predict, [batch_of(1, start=i)]) for i in range(4)]
        assert all(f.result(timeout=4)[0].shape == (1, 1) for f in futures)
    assert batcher.stats().batch_rows == {4: 1}
    batcher.close()


class InlineEngine(WrappedEngine):
    """An engine that, like the compiled twin, runs on the caller's thread; fails on a poisoned row."""

    inline = True

    def predict(self, arrays):
        if (arrays[0] == 66.0).any():
            raise RuntimeError("poisoned row (internal detail that must not reach callers)")
        return self.engine.predict(arrays)


@pytest.mark.unit
def test_an_inline_engine_is_counted_and_fails_like_a_batch(loaded_seed, seed_h5):
    import asyncio
    batcher = Batcher(InlineEngine(loaded_seed.engine.engine), BatchConfig(), "seed")
    x = batch_of(3)
    (y,) = asyncio.run(batcher.predict_async([x]))
    np.testing.assert_allclose(y, modelzoo.reference(seed_h5, x)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelFailed, match=r"failed to run inputs of shape \[\[2, 1, 1\]\]") as failed:
        asyncio.run(batcher.predict_async([np.full((2, 1, 1), 66.0, np.float32)]))
    assert "internal detail" not in str(failed.value)
    stats = batcher.stats()
    assert (stats.requests, stats.rows, stats.batches, stats.failed_batches) == (1, 3, 1, 1)
    assert batcher._queue == deque() and stats.batch_rows == {3: 1}
    batcher.close()


@pytest.mark.integration
def test_concurrent_callers_with_malformed_requests_in_the_same_burst(start_server, loaded_seed, seed_h5):
    server = start_server(loaded_seed)
    target = f"127.0.0.1:{server.port}"
    xs = [batch_of(1 + i % 6, start=i) for i in range(48)]
    expected = [modelzoo.reference(seed_h5, x)[0] for x in xs]

    def call(i: int):
        with Client(target, timeout=30) as client:
            if i % 7 == 3:  # two features where the model takes one: rejected before any queue
                return client.predict(np.zeros((2, 1, 2), np.float32))
            return client.predict(xs[i])

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(call, i) for i in range(48)]
    for i, future in enumerate(futures):
        if i % 7 == 3:
            assert isinstance(future.exception(), LstmserveError)
            assert future.exception().code.name == "INVALID_ARGUMENT"
            assert "has 2 features" in future.exception().message
        else:
            np.testing.assert_allclose(future.result(), expected[i], rtol=1e-5, atol=1e-6)
    valid = [i for i in range(48) if i % 7 != 3]
    stats = stats_of(target, "seed")
    assert stats.requests >= len(valid) and stats.rows >= sum(xs[i].shape[0] for i in valid)


def stats_of(target: str, name: str) -> spb.ModelStats:
    import grpc
    with grpc.insecure_channel(target) as channel:
        reply = spb_grpc.StatsServiceStub(channel).GetModelStats(
            spb.GetModelStatsRequest(model={"name": name}), timeout=10)
    (stats,) = reply.models
    return stats


@pytest.mark.integration
def test_stats_rpc_counts_batches_by_size(start_server, loaded_seed):
    server = start_server(loaded_seed)
    target = f"127.0.0.1:{server.port}"
    before = stats_of(target, "seed")
    with Client(target, timeout=30) as client:
        client.predict(batch_of(3))
        client.predict(batch_of(3))
    after = stats_of(target, "seed")
    sizes = {c.rows: c.batches for c in after.batch_sizes}
    assert after.requests - before.requests == 2 and after.rows - before.rows == 6
    assert sizes.get(3, 0) - {c.rows: c.batches for c in before.batch_sizes}.get(3, 0) == 2


def rows_before(gate: GatedEngine, batches_with_marker: list[bool]) -> int:
    """Rows the engine ran before the first batch holding the marked request."""
    first = batches_with_marker.index(True)
    return sum(gate.batches[:first])


class MarkingEngine(GatedEngine):
    """Records, per batch, whether it held a row of value `marker`."""

    def __init__(self, engine, marker: float) -> None:
        super().__init__(engine)
        self.marker, self.marked = marker, []

    def predict(self, arrays):
        outputs = super().predict(arrays)
        self.marked.append(bool((arrays[0] == self.marker).any()))
        return outputs


@pytest.mark.unit
def test_a_one_row_call_waits_for_a_chunk_of_each_big_request_not_for_all_of_them(loaded_seed, seed_h5):
    gate = MarkingEngine(loaded_seed.engine.engine, marker=99.0)
    batcher = Batcher(gate, BatchConfig(max_batch=8), "seed")
    bigs = [[batch_of(40, start=i + 1)] for i in range(3)]
    one = [np.full((1, 1, 1), 99.0, np.float32)]
    answers = burst(batcher, gate, [[batch_of(1)], *bigs, one])
    # Before: each 40-row request ran whole, 120 rows ahead of the 1-row call. Now one chunk of each.
    assert rows_before(gate, gate.marked) <= 1 + 3 * 8
    assert sum(gate.batches) == 1 + 120 + 1 and max(gate.batches) <= 8
    assert_answers_are_the_models(seed_h5, [*bigs, one], answers[1:])
    batcher.close()


@pytest.mark.unit
def test_a_request_whose_caller_gave_up_is_dropped_from_the_queue(loaded_seed):
    gate = GatedEngine(loaded_seed.engine.engine)
    batcher = Batcher(gate, BatchConfig(max_batch=8), "seed")

    async def scenario():
        first = asyncio.ensure_future(batcher.predict_async([batch_of(1)]))
        while not gate.entered.is_set():
            await asyncio.sleep(0.005)
        big = asyncio.ensure_future(batcher.predict_async([batch_of(40)]))
        while len(batcher._queue) < 1:
            await asyncio.sleep(0.005)
        big.cancel()  # what gRPC does to a handler whose caller cancelled or whose deadline passed
        gate.release.set()
        await first
        return await batcher.predict_async([batch_of(2)])

    assert asyncio.run(scenario())[0].shape == (2, 1)
    assert gate.batches == [1, 2]  # none of the cancelled request's 40 rows ran
    batcher.close()


@pytest.mark.unit
def test_a_failing_chunk_fails_its_request_and_drops_the_rest_of_it(loaded_seed, seed_h5):
    gate = GatedEngine(loaded_seed.engine.engine, poison=66.0)
    batcher = Batcher(gate, BatchConfig(max_batch=8), "seed")
    poisoned = batch_of(40)
    poisoned[12] = 66.0  # in the second chunk
    small = [batch_of(3, start=1)]
    answers = burst(batcher, gate, [[batch_of(1)], [poisoned], small])
    assert isinstance(answers[1], ModelFailed) and "inputs of shape [[40, 1, 1]]" in str(answers[1])
    np.testing.assert_allclose(answers[2][0], modelzoo.reference(seed_h5, small[0])[0], rtol=1e-5, atol=1e-6)
    assert sum(gate.batches) == 1 + 8 + 3  # the first chunk and the small request; nothing after the failure
    batcher.close()


@pytest.mark.integration
def test_a_call_past_its_deadline_leaves_the_queue_unrun(start_server, loaded_seed):
    from dataclasses import replace
    gate = GatedEngine(loaded_seed.engine.engine)
    model = replace(loaded_seed, engine=Batcher(gate, BatchConfig(max_batch=8), "seed"))
    server = start_server(model)
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.predict, batch_of(1))
        assert gate.entered.wait(30)
        with pytest.raises(LstmserveError) as caught:
            client.predict(batch_of(400), timeout=0.5)
        assert caught.value.code.name == "DEADLINE_EXCEEDED"
        # The client gives up at its deadline; the server learns it a moment later, when gRPC cancels
        # the handler (which then leaves admission).
        deadline = time.monotonic() + 30
        while server.admission.calls > 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        gate.release.set()
        first.result(30)
        assert client.predict(batch_of(2)).shape == (2, 1)
    assert gate.batches == [1, 2]
    model.close()
