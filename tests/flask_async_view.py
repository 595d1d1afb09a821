"""Run by tests/test_flask_async_views.py in a fresh interpreter: Flask's own ``async def``
view with a module-level ``AsyncOpenAI`` client, asked five times in a row.

    python tests/flask_async_view.py BASE_URL

Prints a JSON list: each request's answer, or the error it raised. A process of its own,
because whether asgiref gives each request a new loop can depend on what ran before in
the same process (the test suite's other tests).
"""

from __future__ import annotations

import json
import sys

import httpx2
import openai
from flask import Flask, request

REQUESTS = 5


def make_app(base_url: str) -> Flask:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = True  # the test client raises what the view raised
    shared = openai.AsyncOpenAI(
        base_url=base_url,
        api_key="test",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport()),
    )

    @app.get("/async")
    async def view() -> str:
        reply = await shared.chat.completions.create(
            model="m", messages=[{"role": "user", "content": request.args["q"]}]
        )
        return reply.choices[0].message.content or ""

    return app


def main() -> None:
    seen = []
    with make_app(sys.argv[1]).test_client() as http:
        for i in range(REQUESTS):
            try:
                seen.append(http.get(f"/async?q=question {i}").text)
            except Exception as exc:  # what each request saw is the output
                seen.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
