"""DrainBeforeClose reads what is left of a body before the connection closes, and only then."""

from __future__ import annotations

import pytest
from starlette.types import Message, Receive, Scope, Send

from registry.request_drain import DrainBeforeClose

PIECES = 5


class Client:
    """Delivers a body of `PIECES` pieces and records what was asked of it."""

    def __init__(self) -> None:
        self.delivered = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.delivered += 1
        return {"type": "http.request", "body": b"x" * 10, "more_body": self.delivered < PIECES}

    async def send(self, message: Message) -> None:
        self.sent.append(message)


def _scope(**headers: str) -> Scope:
    """A request declaring the client's body, with `headers` besides."""
    headers = {"content_length": str(PIECES * 10), **headers}
    raw = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "http", "http_version": "1.1", "headers": raw}


async def _answer_early(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()  # one piece, then an error
    await send({"type": "http.response.start", "status": 507, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _fail(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    raise RuntimeError("a bug")


@pytest.mark.parametrize(
    ("scope", "delivered"),
    [(_scope(), 1),  # kept alive: the server discards the rest after answering
     (_scope(connection="close"), PIECES),
     ({**_scope(), "http_version": "1.0"}, PIECES)],
)  # fmt: skip
async def test_drained_before_an_answer_that_closes(scope: Scope, delivered: int) -> None:
    client = Client()
    await DrainBeforeClose(_answer_early)(scope, client.receive, client.send)
    assert client.delivered == delivered
    assert client.sent[0]["status"] == 507


async def test_drained_before_the_500_of_an_exception() -> None:
    client = Client()
    with pytest.raises(RuntimeError):
        await DrainBeforeClose(_fail)(_scope(), client.receive, client.send)
    assert client.delivered == PIECES


async def test_not_drained_past_the_limit() -> None:
    client = Client()
    await DrainBeforeClose(_answer_early, limit=15)(
        _scope(connection="close"), client.receive, client.send
    )
    assert client.delivered == 3  # 10 bytes read by the app, then 10 + 10 > 15


async def test_a_body_never_asked_for_is_not_drained() -> None:
    """`Expect: 100-continue`: the client sends nothing until asked, so reading would
    ask for a body the answer makes pointless."""

    async def answer_at_once(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})

    client = Client()
    scope = _scope(connection="close", expect="100-continue")
    await DrainBeforeClose(answer_at_once)(scope, client.receive, client.send)
    assert client.delivered == 0


@pytest.mark.parametrize("declared", [{"content_length": "0"}, {}])
async def test_a_request_declaring_no_body_goes_through_untouched(declared: dict[str, str]) -> None:
    """Nothing can be left unread: the app gets the server's own `receive` and `send`."""
    client = Client()
    seen: list[tuple[Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((receive, send))
        raise RuntimeError("a bug")

    scope = {**_scope(connection="close", **declared)}
    if not declared:
        scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"content-length"]
    with pytest.raises(RuntimeError):
        await DrainBeforeClose(app)(scope, client.receive, client.send)
    assert seen == [(client.receive, client.send)]
    assert client.delivered == 0
