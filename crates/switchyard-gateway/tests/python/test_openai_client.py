"""The official `openai` client against switchyard-gateway, streaming and not.

Run by `.ci/openai-client`, which starts the simulated model servers and the gateway on
ephemeral loopback ports and exports SWITCHYARD_GATEWAY_URL (e.g. http://127.0.0.1:PORT) and
SWITCHYARD_MODEL (the model the fleet serves).
"""
import os

import openai
import pytest

BASE = os.environ["SWITCHYARD_GATEWAY_URL"]
MODEL = os.environ["SWITCHYARD_MODEL"]


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=f"{BASE}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_what_the_fleet_serves(client):
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids


def test_chat_completion(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say something about switchyards."}],
        max_tokens=12,
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens > 0


def test_chat_completion_streams_chunk_by_chunk(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to ten."}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert len(pieces) >= 2, pieces
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens == 10


def test_completions_endpoint(client):
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5)
    assert r.choices[0].text
    assert r.usage.completion_tokens == 5


def test_routing_headers_pass(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        extra_headers={
            "x-switchyard-priority": "critical",
            "x-switchyard-tenant": "7",
            "x-switchyard-slo-ms": "60000",
        },
    )
    assert r.usage.completion_tokens == 3


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.status_code == 404


def test_a_bad_priority_header_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-switchyard-priority": "urgent"},
        )
