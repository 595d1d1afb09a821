"""Request parsing and response shapes for the OpenAI and Anthropic endpoints.

Pure functions over JSON values: no I/O, no aiohttp. The server module wires
them to HTTP. Each endpoint turns a request body into a :class:`Call` (or raises
:class:`BadRequest`), and a call into a JSON reply or a list of SSE events.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from ._content import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    DEFAULT_REPLY_TOKENS,
    Reply,
    embed,
    encode_embedding,
    expected_digest,
    make_reply,
    split_chunks,
    token_count,
)
from ._ratelimit import Cost

__all__ = [
    "ENDPOINTS",
    "BadRequest",
    "Call",
    "Endpoint",
]

_MAX_DIMENSIONS = 4096
_ids = itertools.count(1)


class BadRequest(Exception):  # noqa: N818 -- named for the HTTP status it becomes
    """The request body is invalid; becomes a 400 with a provider-shaped body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass
class Call:
    """One valid request, with everything the server needs to answer it."""

    model: str
    stream: bool
    prompt_tokens: int
    max_output: int  # the reply's cap: max_tokens, or the default; 0 for embeddings
    reply: Reply | None = None  # chat and messages
    include_usage: bool = False  # chat streams: stream_options.include_usage
    tool: str | None = None  # chat: the function a tool call must name (tools, tool_choice)
    digest: str = ""  # chat with a tool: expected_digest of the last user message
    inputs: list[str] | None = None  # embeddings
    dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS
    base64: bool = False

    @property
    def cost(self) -> Cost:
        """What the request asks of the rate limiter."""
        return Cost(self.prompt_tokens, self.max_output)

    @property
    def completion_tokens(self) -> int:
        """Tokens in the full reply; 0 for embeddings."""
        return 0 if self.reply is None else self.reply.tokens


def dumps(value: object) -> bytes:
    """Compact JSON, as providers send it."""
    return json.dumps(value, separators=(",", ":")).encode()


def parse_json(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(
            f"We could not parse the JSON body of your request: {exc}. Send a valid JSON object."
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


class Endpoint:
    """Base for one API route: parses requests and renders answers."""

    name = ""
    provider = "openai"

    def parse(self, body: dict[str, Any]) -> Call:
        """Validate ``body`` and describe the call; raises :class:`BadRequest`."""
        raise NotImplementedError

    def respond(self, call: Call) -> dict[str, Any]:
        """The full non-streaming JSON answer."""
        raise NotImplementedError

    def events(self, call: Call) -> list[bytes]:
        """The SSE events of a streamed answer, in order."""
        raise NotImplementedError

    def error(self, status: int, message: str, param: str | None = None) -> dict[str, Any]:
        """An OpenAI-shaped error body."""
        kind = _OPENAI_ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        code = "rate_limit_exceeded" if status == 429 else None
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}


_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class ChatCompletions(Endpoint):
    """``POST /v1/chat/completions``, OpenAI's shape."""

    name = "chat.completions"

    def parse(self, body: dict[str, Any]) -> Call:
        model = _model(body)
        messages = _messages(body)
        max_tokens = _max_tokens(body, "max_completion_tokens", required=False)
        if max_tokens is None:
            max_tokens = _max_tokens(body, "max_tokens", required=False)
        stream = _flag(body, "stream")
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise BadRequest("stream_options must be an object.", "stream_options")
        prompt = sum(token_count(_text(m.get("content"))) for m in messages)
        last_user = _last_user(messages)
        tool = None if stream else _forced_tool(body)
        return Call(
            model=model,
            stream=stream,
            prompt_tokens=prompt,
            max_output=max_tokens or DEFAULT_REPLY_TOKENS,
            reply=make_reply(last_user, max_tokens),
            include_usage=stream and bool((options or {}).get("include_usage")),
            tool=tool,
            digest=expected_digest(last_user) if tool else "",
        )

    def respond(self, call: Call) -> dict[str, Any]:
        reply = _reply(call)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        finish = _finish(reply, "length", "stop")
        if call.tool is not None:
            arguments = {"digest": call.digest, "text": reply.text}
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": f"call_sim{next(_ids)}",
                    "type": "function",
                    "function": {"name": call.tool, "arguments": dumps(arguments).decode()},
                }
            ]
            finish = "tool_calls"
        return {
            **self._envelope(call, "chat.completion"),
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": _openai_usage(call),
        }

    def events(self, call: Call) -> list[bytes]:
        reply = _reply(call)
        envelope = self._envelope(call, "chat.completion.chunk")
        if call.include_usage:
            envelope["usage"] = None
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": ""}, None)
        ]
        deltas += [({"content": piece}, None) for piece in split_chunks(reply.text)]
        deltas.append(({}, _finish(reply, "length", "stop")))
        chunks = [
            {
                **envelope,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            for delta, finish in deltas
        ]
        if call.include_usage:
            chunks.append({**envelope, "choices": [], "usage": _openai_usage(call)})
        return [b"data: " + dumps(chunk) + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]

    @staticmethod
    def _envelope(call: Call, kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-sim{next(_ids)}",
            "object": kind,
            "created": int(time.time()),
            "model": call.model,
            "system_fingerprint": None,
        }


class Messages(Endpoint):
    """``POST /v1/messages``, Anthropic's shape."""

    name = "messages"
    provider = "anthropic"

    def parse(self, body: dict[str, Any]) -> Call:
        model = _model(body)
        messages = _messages(body)
        max_tokens = _max_tokens(body, "max_tokens", required=True)
        system = body.get("system")
        if system is not None and not isinstance(system, (str, list)):
            raise BadRequest("system must be a string or a list of text blocks.", "system")
        prompt = token_count(_text(system)) + sum(
            token_count(_text(m.get("content"))) for m in messages
        )
        return Call(
            model=model,
            stream=_flag(body, "stream"),
            prompt_tokens=prompt,
            max_output=max_tokens or DEFAULT_REPLY_TOKENS,
            reply=make_reply(_last_user(messages), max_tokens),
        )

    def respond(self, call: Call) -> dict[str, Any]:
        reply = _reply(call)
        return {
            **self._message(call, _finish(reply, "max_tokens", "end_turn")),
            "content": [{"type": "text", "text": reply.text}],
            "usage": {"input_tokens": call.prompt_tokens, "output_tokens": reply.tokens},
        }

    def events(self, call: Call) -> list[bytes]:
        reply = _reply(call)
        start = {
            **self._message(call, None),
            "content": [],
            "usage": {"input_tokens": call.prompt_tokens, "output_tokens": 1},
        }
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": start},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ]
        events += [
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            for piece in split_chunks(reply.text)
        ]
        events += [
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": _finish(reply, "max_tokens", "end_turn"),
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": reply.tokens},
            },
            {"type": "message_stop"},
        ]
        return [f"event: {e['type']}\ndata: ".encode() + dumps(e) + b"\n\n" for e in events]

    def error(self, status: int, message: str, param: str | None = None) -> dict[str, Any]:
        """An Anthropic-shaped error body."""
        kind = _ANTHROPIC_ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": kind, "message": message}}

    @staticmethod
    def _message(call: Call, stop_reason: str | None) -> dict[str, Any]:
        return {
            "id": f"msg_sim{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "stop_reason": stop_reason,
            "stop_sequence": None,
        }


class Embeddings(Endpoint):
    """``POST /v1/embeddings``, OpenAI's shape."""

    name = "embeddings"

    def parse(self, body: dict[str, Any]) -> Call:
        model = _model(body)
        inputs = _embedding_inputs(body.get("input"))
        dimensions = body.get("dimensions", DEFAULT_EMBEDDING_DIMENSIONS)
        if not _positive_int(dimensions) or dimensions > _MAX_DIMENSIONS:
            raise BadRequest(
                f"dimensions must be an integer from 1 to {_MAX_DIMENSIONS}.", "dimensions"
            )
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise BadRequest("encoding_format must be 'float' or 'base64'.", "encoding_format")
        prompt = sum(token_count(text) for text in inputs)
        return Call(
            model=model,
            stream=False,
            prompt_tokens=prompt,
            max_output=0,
            inputs=inputs,
            dimensions=dimensions,
            base64=encoding == "base64",
        )

    def respond(self, call: Call) -> dict[str, Any]:
        data = []
        for index, text in enumerate(call.inputs or ()):
            vector = embed(text, call.dimensions)
            value: object = encode_embedding(vector) if call.base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": value})
        usage = {"prompt_tokens": call.prompt_tokens, "total_tokens": call.prompt_tokens}
        return {"object": "list", "data": data, "model": call.model, "usage": usage}


ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": ChatCompletions(),
    "/v1/messages": Messages(),
    "/v1/embeddings": Embeddings(),
}


def _reply(call: Call) -> Reply:
    assert call.reply is not None  # parse() always sets it for chat and messages
    return call.reply


def _finish(reply: Reply, truncated: str, complete: str) -> str:
    return truncated if reply.truncated else complete


def _openai_usage(call: Call) -> dict[str, int]:
    completion = call.completion_tokens
    return {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": call.prompt_tokens + completion,
    }


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter: a non-empty string.", "model")
    return model


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty array of message objects.", "messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"{where} must be an object with a string 'role'.", where)
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise BadRequest(
                f"{where}.content must be a string or an array of parts.", f"{where}.content"
            )
    return messages


def _max_tokens(body: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadRequest(f"{name} must be a positive integer, got {value!r}.", name)
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be a boolean.", name)
    return value


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _text(content: object) -> str:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _last_user(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return _text(message.get("content"))
    return ""


def _forced_tool(body: dict[str, Any]) -> str | None:
    """The function a reply must call: the one ``tool_choice`` names, or the only tool when
    a call is required. None: the model answers in text, as models may."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(_function_name(t) for t in tools):
        raise BadRequest("tools must be an array of {type: function, function: {name}}.", "tools")
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = _function_name(choice)
        if name not in {_function_name(t) for t in tools}:
            raise BadRequest("tool_choice must name one of the tools.", "tool_choice")
        return name
    if choice == "required" and len(tools) == 1:
        return _function_name(tools[0])
    return None


def _function_name(value: object) -> str | None:
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) and name else None


def _embedding_inputs(value: object) -> list[str]:
    """Texts to embed; token arrays stand for themselves as their JSON text."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) and v for v in value):
            return list(value)
        if all(_positive_int(v) or v == 0 for v in value):
            return [json.dumps(value)]
        if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
            return [json.dumps(v) for v in value]
    raise BadRequest(
        "input must be a non-empty string, an array of non-empty strings, or token arrays.", "input"
    )
