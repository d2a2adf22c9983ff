"""The step function against the model itself: every session's steps equal predicting each prefix whole."""

from __future__ import annotations

import asyncio

import modelzoo
import numpy as np
import pytest
import session_models

from lstmserve.server import keras_internals
from lstmserve.server.engine.base import EngineConfig
from lstmserve.server.engine.stepper import build_step_engine
from lstmserve.server.engine.stepplan import NotSteppable, plan_steps
from lstmserve.server.errors import InvalidInput
from lstmserve.server.loading.load import load_model
from lstmserve.server.serving.heads import Mode
from lstmserve.server.serving.registry import ModelRegistry
from lstmserve.server.serving.sessions import SessionManager
from lstmserve.server.specs import TensorSpec

# Small buckets: every architecture below compiles its step function at load (each shape ~1 s).
ENGINE = EngineConfig(buckets=(1, 4), step_buckets=(1, 64))
TOLERANCE = 1e-5
CHUNKS = (1, 2, 1, 17, 3)  # single steps, a few steps, more than one CHUNK, at one session


def _load(path, name):
    return load_model(path, name, engine=ENGINE)


def _inputs(rng, shapes: dict, steps: int, tokens: bool = False) -> dict:
    if tokens:
        return {name: rng.integers(0, 50, size=(steps, *shape)).astype(np.int32)
                for name, shape in shapes.items()}
    return {name: rng.normal(size=(steps, *shape)).astype(np.float32) for name, shape in shapes.items()}


async def _step_through(model, xs: dict, chunks=CHUNKS, mode: Mode = Mode.VALUES) -> dict:
    """Every step's answer [steps, ...] per output, stepping `xs` in messages of `chunks` steps."""
    registry = ModelRegistry()
    registry.add(model)
    session = SessionManager(registry).create(model.name)
    got, start = [], 0
    for k in chunks:
        result = await session.step({n: x[start:start + k] for n, x in xs.items()}, mode)
        assert result.answered == k and result.position == start + k
        got.append(result.prediction.outputs)
        start += k
    return {name: np.concatenate([g[name] for g in got]) for name in got[0]}


def _whole(path, xs: dict, steps: int, sequence_outputs: set) -> dict:
    """What Keras answers for the prefix of each length: the per-step row of sequence outputs. (Plain
    Keras: the served model compiles one function per sequence length, and equals Keras elsewhere.)"""
    import keras
    model = keras.models.load_model(path, compile=False)
    names = [keras_internals.layer_of(t).name for t in model.outputs]
    order = [t.name for t in model.inputs]
    answers = {}
    for n in range(1, steps + 1):
        arrays = [x[None, :n] for x in xs.values()] if len(xs) == 1 else [xs[k][None, :n] for k in order]
        outputs = model(arrays if len(arrays) > 1 else arrays[0], training=False)
        for name, value in zip(names, outputs if isinstance(outputs, (list, tuple)) else [outputs]):
            value = np.asarray(value)
            answers.setdefault(name, []).append(value[0][n - 1] if name in sequence_outputs else value[0])
    return {name: np.stack(rows) for name, rows in answers.items()}


CASES = {  # builder, step shapes per input, outputs at every step, token inputs
    "stacked": (modelzoo.stacked_free, {"": (3,)}, set(), False),
    "gru_sequences": (modelzoo.gru_sequences, {"": (2,)}, {"per_step"}, False),
    "masked": (modelzoo.masked, {"": (2,)}, {"per_step"}, False),
    "two_sequences": (modelzoo.two_sequences, {"a": (2,), "b": (3,)}, {"per_step"}, False),
    "encoder_decoder": (modelzoo.encoder_decoder, {"": (1,)}, set(), False),
    "embedding": (modelzoo.embedding, {"": ()}, set(), True),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_stepping_equals_predicting_every_prefix_whole(case, tmp_path):
    builder, shapes, sequence_outputs, tokens = CASES[case]
    path = builder(tmp_path / f"{case}.h5")
    model = _load(path, case)
    assert model.sessions.kind == "state"
    rng = np.random.default_rng(7)
    steps = sum(CHUNKS)
    xs = _inputs(rng, shapes, steps, tokens)
    first = next(iter(xs))
    if case in ("masked", "embedding"):
        xs[first][[0, 3, 4, 22]] = 0  # masked steps: the state is carried, the last output repeated
    stepped = asyncio.run(_step_through(model, xs))
    whole = _whole(path, xs, steps, sequence_outputs)
    assert set(whole) == set(stepped)
    for name, want in whole.items():
        assert stepped[name].shape == want.shape, name
        np.testing.assert_allclose(stepped[name], want, rtol=TOLERANCE, atol=TOLERANCE)
    model.close()


@pytest.mark.slow
def test_stepping_matches_plain_keras_and_answers_classes(tmp_path):
    path = modelzoo.gru_sequences(tmp_path / "gru.h5")
    model = _load(path, "gru")
    xs = {"": np.random.default_rng(3).normal(size=(12, 2)).astype(np.float32)}
    stepped = asyncio.run(_step_through(model, xs, (5, 7)))["per_step"]
    keras_answer = modelzoo.reference(path, xs[""][None])[0][0]
    np.testing.assert_allclose(stepped, keras_answer, rtol=TOLERANCE, atol=TOLERANCE)
    classes = asyncio.run(_step_through(model, xs, (12,), Mode.CLASSES))["per_step"]
    np.testing.assert_array_equal(classes, keras_answer.argmax(-1))
    model.close()


@pytest.mark.slow
def test_a_stateful_model_is_stepped_like_its_own_stateful_calls(tmp_path):
    """stateful=True: Keras carries the state across calls of one row; the step engine carries it per
    session (engine level: serving such a file whole is loading/'s part)."""
    import keras
    model = keras.models.load_model(modelzoo.stateful(tmp_path / "stateful.h5"), compile=False)
    plan = plan_steps(model)
    assert plan.stateful and plan.state_size == 8
    engine = build_step_engine(model, plan, [TensorSpec("x", np.dtype("float32"), (1, 1, 2))], True, (1, 4))
    x = np.random.default_rng(5).normal(size=(9, 2)).astype(np.float32)
    state, stepped = np.zeros((1, 8), np.float32), []
    for t in range(9):
        out, state = engine.predict([x[None, t:t + 1], state])
        stepped.append(out[0, 0])
    model.layers[0].reset_states()
    expected = [np.asarray(model(x[None, t:t + 1], training=False))[0] for t in range(9)]
    np.testing.assert_allclose(np.stack(stepped), np.stack(expected), rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.slow
def test_64_interleaved_sessions_each_equal_their_own_whole_sequence(tmp_path):
    """Steps of 64 sessions arrive together and run in shared batches; each session sees only its own."""
    path = modelzoo.stacked_free(tmp_path / "stacked.h5")
    model = _load(path, "stacked")
    registry = ModelRegistry()
    registry.add(model)
    manager = SessionManager(registry)
    rng = np.random.default_rng(11)
    sequences = [rng.normal(size=(int(rng.integers(5, 12)), 3)).astype(np.float32) for _ in range(64)]
    sessions = [manager.create("stacked") for _ in sequences]

    async def run(session, sequence, seed):
        order = np.random.default_rng(seed)
        answers, start = [], 0
        while start < len(sequence):
            k = int(order.integers(1, 4))
            result = await session.step({"": sequence[start:start + k]}, Mode.VALUES)
            answers.append(result.prediction.outputs["dense"])
            start += k
            await asyncio.sleep(0)
        return np.concatenate(answers)

    async def all_sessions():
        return await asyncio.gather(*(run(s, q, i) for i, (s, q) in enumerate(zip(sessions, sequences))))

    assert model.sessions.stepper.inline  # a small step function: batched per turn of the event loop
    before = model.sessions.stepper.stats()
    stepped = asyncio.run(all_sessions())
    batches = model.sessions.stepper.stats()
    assert batches.rows - before.rows > batches.batches - before.batches  # steps really shared batches
    import keras
    oracle = keras.models.load_model(path, compile=False)
    for n in range(1, 12):  # every session's prefix of length n, in one Keras call (rows are independent)
        which = [i for i, q in enumerate(sequences) if len(q) >= n]
        whole = np.asarray(oracle(np.stack([sequences[i][:n] for i in which]), training=False))
        for row, i in enumerate(which):
            np.testing.assert_allclose(stepped[i][n - 1], whole[row], rtol=TOLERANCE, atol=TOLERANCE)
    # and the served Predict of one whole sequence is the last step's answer
    last = model.predict({"": sequences[0][None]}, Mode.VALUES).outputs["dense"][0]
    np.testing.assert_allclose(stepped[0][-1], last, rtol=TOLERANCE, atol=TOLERANCE)
    model.close()


@pytest.mark.slow
def test_a_bad_step_leaves_the_session_as_it_was(tmp_path):
    model = _load(modelzoo.stacked_free(tmp_path / "stacked.h5"), "stacked")
    registry = ModelRegistry()
    registry.add(model)
    manager = SessionManager(registry)
    x = np.random.default_rng(2).normal(size=(6, 3)).astype(np.float32)

    async def steps(bad: bool):
        session = manager.create("stacked")
        await session.step({"": x[:3]}, Mode.VALUES)
        if bad:
            for wrong in (x[:2, :2], x[:2].astype(np.int32), np.full((1, 3), np.nan, np.float32),
                          x[:1, :, None], np.zeros((0, 3), np.float32)):
                with pytest.raises(InvalidInput):
                    await session.step({"": wrong}, Mode.VALUES)
            with pytest.raises(InvalidInput):
                await session.step({"other": x[:1]}, Mode.VALUES)
        result = await session.step({"": x[3:]}, Mode.VALUES)
        return result.prediction.outputs["dense"], result.position, session.state_bytes

    clean, dirty = asyncio.run(steps(False)), asyncio.run(steps(True))
    np.testing.assert_array_equal(clean[0], dirty[0])
    assert clean[1:] == dirty[1:] == (6, 88)
    model.close()


@pytest.mark.slow
def test_state_session_with_a_preparation_keeps_the_raw_steps_it_consumes(tmp_path):
    """Free timesteps, differencing at lag 3, scaling: the first 3 raw steps answer nothing; later ones
    equal Predict on the whole raw prefix, in raw units."""
    model = _load(session_models.forecaster(tmp_path / "free.h5", timesteps=None), "free")
    assert model.sessions.kind == "state" and model.sessions.lag == 3
    assert model.sessions.state_bytes == 4 * 10 + 3 * 4  # (h, c) of LSTM(5) and 3 raw steps
    raw = session_models.series()[120:140]
    registry = ModelRegistry()
    registry.add(model)
    session = SessionManager(registry).create("free")

    async def steps():
        results = [await session.step({"": raw[:2]}, Mode.VALUES)]
        for start, k in ((2, 1), (3, 5), (8, 12)):
            results.append(await session.step({"": raw[start:start + k]}, Mode.VALUES))
        return results

    results = asyncio.run(steps())
    assert [(r.answered, r.missing) for r in results] == [(0, 2), (0, 1), (5, 0), (12, 0)]
    stepped = np.concatenate([r.prediction.outputs["dense"] for r in results[2:]])
    for n in (4, 9, 20):  # Predict on the whole raw prefix (each length compiles once: a few suffice)
        whole = model.predict({"": raw[None, :n]}, Mode.VALUES).outputs["dense"][0]
        np.testing.assert_allclose(stepped[n - 4], whole, rtol=TOLERANCE, atol=1e-4)
    assert abs(stepped).mean() > 50  # raw units, not scaled differences
    model.close()


@pytest.mark.slow
def test_window_session_answers_predict_on_each_window(tmp_path):
    model = _load(session_models.forecaster(tmp_path / "window.h5", timesteps=6, lag=3), "window")
    assert model.sessions.kind == "window" and model.sessions.windows == (9,)
    assert model.sessions.steps_before_answer == 8 and model.sessions.state_bytes == 8 * 4
    raw = session_models.series()[100:130]
    registry = ModelRegistry()
    registry.add(model)
    session = SessionManager(registry).create("window")

    async def steps():
        return [await session.step({"": raw[s:s + k]}, Mode.VALUES)
                for s, k in ((0, 5), (5, 3), (8, 1), (9, 21))]

    results = asyncio.run(steps())
    assert [(r.answered, r.missing) for r in results] == [(0, 4), (0, 1), (1, 0), (21, 0)]
    stepped = np.concatenate([r.prediction.outputs["dense"] for r in results[2:]])
    windows = np.stack([raw[end - 9:end] for end in range(9, 31)])
    np.testing.assert_array_equal(stepped, model.predict({"": windows}, Mode.VALUES).outputs["dense"])
    # prepared=True: prepared steps in, the model's own outputs out, a window of the model's 6 steps
    prepared_session = SessionManager(registry).create("window", prepared=True)
    prepared = model.preparation.prepare([raw[None]])[0][0]  # 27 prepared steps from 30 raw ones
    answer = asyncio.run(prepared_session.step({"": prepared}, Mode.VALUES))
    assert (answer.answered, prepared_session.keep_steps) == (22, [5])
    expected = model.predict({"": windows}, Mode.VALUES, prepared=False).outputs["dense"]
    raw_outputs = model.predict({"": np.stack([prepared[e - 6:e] for e in range(6, 28)])}, Mode.VALUES,
                                prepared=True).outputs["dense"]
    np.testing.assert_array_equal(answer.prediction.outputs["dense"], raw_outputs)
    assert not np.allclose(raw_outputs, expected)  # scaled differences, not passengers
    model.close()


REFUSALS = {  # builder, kind, words the reason must hold
    "bidirectional_free": (lambda p: modelzoo.bidirectional(p), "none", "Bidirectional 'bidirectional'"),
    "bidirectional_fixed": (lambda p: modelzoo.bidirectional(p, 7), "window", "fixed timesteps"),
    "pooled": (modelzoo.pooled, "none", "GlobalAveragePooling1D 'pool' pools over time"),
    "multi_io": (modelzoo.multi_io, "none", "input 'static' of shape [None, 4] has no time axis"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_what_cannot_be_stepped_is_named(case, tmp_path):
    builder, kind, words = REFUSALS[case]
    model = _load(builder(tmp_path / f"{case}.h5"), case)
    assert model.sessions.kind == kind
    assert words in model.sessions.reason
    model.close()


@pytest.mark.unit
def test_plans_name_the_layer_that_prevents_stepping():
    import keras
    cases = [
        (keras.Sequential([keras.Input((None, 2)), keras.layers.LSTM(3, go_backwards=True)]), "go_backwards"),
        (keras.Sequential([keras.Input((None, 2)), keras.layers.Conv1D(2, 3, name="conv")]),
         "Conv1D 'conv' convolves across timesteps"),
        (keras.Sequential([keras.Input((None, 2)), keras.layers.Softmax(axis=1, name="sm")]),
         "Softmax 'sm' works along the time axis"),
    ]
    for model, words in cases:
        with pytest.raises(NotSteppable, match=words):
            plan_steps(model)
    seq = keras.Input((None, 2))
    summary = keras.layers.LSTM(3, name="enc")(seq)
    query = keras.layers.Reshape((1, 3))(summary)
    attended = keras.layers.Attention(name="attn")([query, keras.layers.Dense(3)(seq)])
    with pytest.raises(NotSteppable, match="Attention 'attn' combines the sequence"):
        plan_steps(keras.Model(seq, attended))
