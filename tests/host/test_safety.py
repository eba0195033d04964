"""The safety pipeline over real HTTP, with the `openai` SDK where it applies.

Tiny random checkpoints answer with random (but greedy, hence repeatable) words, so the rules
that fire on outputs are made from outputs observed first: a ``plain`` server (no safety)
answers the prompts once, and the ``guarded`` server's rules name literal pieces of those
answers. The classifier's threshold is likewise set between two texts' observed scores.
The per-key seam (`Safety.switches`) is connected here as authentication would connect it:
``X-User-Id: screened`` switches the classifier on (it is off by default), ``trusted`` switches
every hook off.

The audit events are written by the control plane's writer and read back from ``/api/events``:
the ``guarded`` server's tests and the classifier's error decision run on SQLite and on a real
PostgreSQL (tests/databases.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from hfskills.host.config import Settings
from hfskills.host.safety.rules import CARD, EMAIL, PHONE, PII, Rule, luhn, redact_pii
from hfskills.host.safety.settings import PIISettings, RuleSettings
from tests.databases import BACKENDS
from tests.host.conftest import Server, entry

openai = pytest.importorskip("openai")

#: Prompts whose greedy answers the post and during rules are made from.
POST_REJECT, POST_REDACT, STREAMED = "the old house", "a small river", "my best friend"
#: Candidates for the classifier's high- and low-scoring texts.
CANDIDATES = ("good morning", "the red car", "we like music", "open the door", "cold water")
PII_PROMPT = "mail jane.doe@example.com or call +1 (555) 123-4567, card 4111 1111 1111 1111"
PII_SEEN = "mail [EMAIL] or call [PHONE], card [CARD]"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- the hooks without a server -------------------------------------------------------------


def test_pii_patterns_find_emails_phones_and_luhn_valid_cards() -> None:
    assert luhn("4111111111111111") and luhn("5500005555555559") and luhn("378282246310005")
    assert not luhn("4111111111111112")
    cases = {
        "write to a.b-c+tag@mail.example.org today": "write to [EMAIL] today",
        "ping bob@localhost or @handle": "ping bob@localhost or @handle",  # no TLD: no email
        "call +44 20 7946 0958 now": "call [PHONE] now",
        "call (555) 123-4567.": "call [PHONE].",
        "call 555.123.4567 or 5551234567": "call [PHONE] or [PHONE]",
        "card 4111-1111-1111-1111 ok": "card [CARD] ok",
        "amex 3782 822463 10005": "amex [CARD]",
        "not a card 4111 1111 1111 1112": "not a card 4111 1111 1111 1112",
        "host 192.168.100.200 port 8080": "host 192.168.100.200 port 8080",
        "on 2024-01-15 at 10:30, 42 items, 555-1234": "on 2024-01-15 at 10:30, 42 items, 555-1234",
    }
    for text, redacted in cases.items():
        assert redact_pii(text) == redacted, text
    assert redact_pii("x@y.io 4111111111111111 +1 555 123 4567", ("email",)).startswith("[EMAIL] 4")


def test_pii_and_rules_stay_linear_on_hostile_input() -> None:
    hostile = [
        "a" * 200_000 + "@",
        "1" * 200_000,
        "1 " * 100_000,
        "a." * 100_000 + "@x",
        "x@" + "a-" * 100_000,
    ]
    for text in hostile:
        started = time.perf_counter()
        for pattern in (EMAIL, CARD, PHONE):
            list(pattern.finditer(text))
        assert time.perf_counter() - started < 2.0, text[:20]


def test_rules_match_whole_keywords_and_patterns() -> None:
    words = Rule.of(RuleSettings(name="words", keywords=["kaboom", "forbidden spell"]))
    assert words.found("a KABOOM here") == "words" and words.found("kaboomer") is None
    assert words.found("the Forbidden  spell") is None and words.found("forbidden spell!")
    secret = Rule.of(
        RuleSettings(name="s", pattern=r"secret-\d+", action="redact", replacement="[S]")
    )
    assert secret.redact("secret-1 and SECRET-22") == ("[S] and [S]", {"s": 2})
    pii = PII.of(PIISettings(kinds=["card", "email"], stages=["pre"]))
    assert pii.found("x 4111 1111 1111 1111") == "pii.card" and pii.found("+1 555 123 4567") is None
    assert pii.redact("a@b.co, b@c.co") == ("[EMAIL], [EMAIL]", {"pii.email": 2})


def test_bad_safety_settings_are_refused() -> None:
    bad: list[dict[str, Any]] = [
        {"rules": [{"name": "r", "pattern": "(unclosed"}]},
        {"rules": [{"name": "r", "pattern": "a", "keywords": ["b"]}]},
        {"rules": [{"name": "r"}]},
        {"rules": [{"name": "pii", "keywords": ["b"]}]},
        {"rules": [{"name": "r", "keywords": ["a"]}, {"name": "r", "keywords": ["b"]}]},
        {"rules": [{"name": "r", "keywords": ["a"], "stages": ["later"]}]},
        {"classifier": {"model": "clf"}},
        {"classifier": {"model": "clf", "label": "x", "threshold": 1.5}},
        {"pii": {"kinds": ["ssn"]}},
    ]
    for table in bad:
        with pytest.raises(ValidationError):
            Settings(safety=table)
    assert not Settings().safety.configured
    assert not Settings(safety={"enabled": False, "pii": {"stages": ["pre"]}}).safety.configured


# -- over HTTP ------------------------------------------------------------------------------


def _stream_texts(server: Server, prompt: str, tokens: int) -> tuple[list[str], list[Any]]:
    """A greedy completion stream's chunk texts, and every event's data (parsed)."""
    body = {
        "model": "gen",
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    texts: list[str] = []
    events: list[Any] = []
    with server.client() as http, http.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
            if data != "[DONE]" and "choices" in events[-1] and events[-1]["choices"]:
                if events[-1]["choices"][0]["text"]:
                    texts.append(events[-1]["choices"][0]["text"])
    return texts, events


def _scores(server: Server, texts: list[str]) -> dict[str, dict[str, float]]:
    """label -> text -> score, each text alone (as the guarded server's classifier sees it)."""
    scores: dict[str, dict[str, float]] = {}
    with server.client() as http:
        for text in texts:
            response = http.post("/models/clf", json={"inputs": text})
            assert response.status_code == 200, response.text
            for entry_ in response.json()[0]:
                scores.setdefault(entry_["label"], {})[text] = entry_["score"]
    return scores


@pytest.fixture(scope="module")
def observed(serve, task_checkpoint, tmp_path_factory) -> dict[str, Any]:
    """What the models answer without safety: the greedy outputs and classifier scores the
    guarded server's rules and threshold are made from."""
    root = tmp_path_factory.mktemp("safety-plain")
    plain = serve(
        models=[
            entry("gen", task_checkpoint("llama", "text_generation")),
            entry("clf", task_checkpoint("bert", "text_classification")),
        ],
        embedded_default=False,
        database_url=f"sqlite:///{root}/control.db",
    )
    assert plain.host.safety is None  # nothing configured: no pipeline at all
    client = openai.OpenAI(base_url=f"{plain.base}/v1", api_key="k", max_retries=0)

    def greedy(prompt: str) -> tuple[str, int]:
        answer = client.completions.create(model="gen", prompt=prompt, max_tokens=8, temperature=0)
        return answer.choices[0].text, answer.usage.completion_tokens

    outputs = {p: greedy(p) for p in (POST_REJECT, POST_REDACT)}
    streamed, _ = _stream_texts(plain, STREAMED, 16)
    by_label = _scores(plain, list(CANDIDATES))
    plain.stop()
    # the label whose scores spread most: a random model's are all near 1/3
    label, scores = max(by_label.items(), key=lambda kv: max(kv[1].values()) - min(kv[1].values()))
    high, low = max(scores, key=scores.__getitem__), min(scores, key=scores.__getitem__)
    assert scores[high] - scores[low] > 1e-6, by_label  # room for a threshold between them
    return {
        "label": label,
        "outputs": {p: text for p, (text, _) in outputs.items()},
        "tokens": {p: n for p, (_, n) in outputs.items()},
        "streamed": streamed,
        "high": high,
        "low": low,
        "threshold": (scores[high] + scores[low]) / 2,
    }


def stop_literal(streamed: list[str]) -> tuple[str, int]:
    """Three chunks of the stream whose text first appears whole with the third (the 5th chunk
    or later), and how many chunks that is."""
    for start in range(2, len(streamed) - 2):
        literal = "".join(streamed[start : start + 3])
        first = next(k for k in range(1, len(streamed) + 1) if literal in "".join(streamed[:k]))
        if literal.strip() and first == start + 3:
            return literal, first
    raise AssertionError(f"no chunks to stop the stream at: {streamed}")


def _literal(text: str) -> str:
    """The text without its leading and trailing spaces: a rule's literal."""
    assert text.strip(), "the model answered only spaces"
    return text.strip()


@pytest.fixture(scope="module", params=BACKENDS)
def guarded(request, serve, task_checkpoint, observed, fresh_database) -> Server:
    """The server with every hook, its audit events in SQLite or in PostgreSQL (skipped, with
    the reason, where PostgreSQL is not installed: tests/databases.py)."""
    outputs = observed["outputs"]
    stop, _ = stop_literal(observed["streamed"])
    server = serve(
        models=[
            entry("gen", task_checkpoint("llama", "text_generation")),
            entry("clf", task_checkpoint("bert", "text_classification")),
            entry("emb", task_checkpoint("bert", "text_embedding")),
        ],
        embedded_default=False,
        database_url=fresh_database(request.param),
        safety={
            "during_every_tokens": 1,
            "rules": [
                {"name": "banned", "keywords": ["kaboom", "forbidden spell"], "stages": ["pre"]},
                {
                    "name": "secret",
                    "pattern": r"secret-\d+",
                    "action": "redact",
                    "replacement": "[SECRET]",
                    "stages": ["pre"],
                },
                {
                    "name": "out-reject",
                    "ignore_case": False,
                    "pattern": re.escape(_literal(outputs[POST_REJECT])),
                    "stages": ["post"],
                },
                {
                    "name": "out-redact",
                    "ignore_case": False,
                    "pattern": re.escape(_literal(outputs[POST_REDACT])),
                    "action": "redact",
                    "stages": ["post"],
                },
                {
                    "name": "stream-stop",
                    "pattern": re.escape(stop),
                    "ignore_case": False,
                    "stages": ["during"],
                },
            ],
            "pii": {"stages": ["pre", "post"]},
            "classifier": {
                "model": "clf",
                "label": observed["label"],
                "threshold": observed["threshold"],
                "stages": ["pre"],
                "default": False,
            },
        },
    )

    def switches(ctx: Any) -> Mapping[str, bool]:  # what authentication would connect
        return {"user:screened": {"classifier": True}, "user:trusted": {"*": False}}.get(
            ctx.user or "", {}
        )

    server.host.safety.switches = switches
    return server


@pytest.fixture(scope="module")
def client(guarded: Server) -> Iterator[Any]:
    with openai.OpenAI(base_url=f"{guarded.base}/v1", api_key="k", max_retries=0) as sdk:
        yield sdk


def events(server: Server, request_id: str) -> list[dict[str, Any]]:
    with server.client() as http:
        response = http.get(
            "/api/events", params={"kind": "safety.decision", "request_id": request_id}
        )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def decisions(server: Server) -> dict[tuple[str, str, str], float]:
    with server.client() as http:
        text = http.get("/metrics").text
    found = {}
    for line in text.splitlines():
        match = re.match(r"hfskills_safety_decisions_total\{(.*)\} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            found[(labels["stage"], labels["rule"], labels["action"])] = float(match.group(2))
    return found


def refused(call: Any) -> Any:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400 and caught.value.code == "content_policy"
    return caught.value


def test_pre_rejects_with_400_content_policy_in_every_api(client, guarded) -> None:
    before = decisions(guarded).get(("pre", "banned", "reject"), 0)
    error = refused(
        lambda: client.completions.create(model="gen", prompt="say kaboom", max_tokens=2)
    )
    assert "rule 'banned'" in error.message
    refused(
        lambda: client.chat.completions.create(
            model="gen",
            messages=[
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "cast the Forbidden Spell"},
            ],
            max_tokens=2,
        )
    )
    refused(lambda: client.embeddings.create(model="emb", input=["fine", "kaboom"]))
    refused(  # a stream refused before it opens is a plain 400, not a stream
        lambda: client.completions.create(model="gen", prompt="kaboom", max_tokens=2, stream=True)
    )
    with guarded.client() as http:  # TGI's shape on TGI's route
        tgi = http.post("/generate", json={"inputs": "kaboom", "parameters": {"max_new_tokens": 2}})
        assert tgi.status_code == 400
        assert tgi.json()["error_type"] == "validation" and "content policy" in tgi.json()["error"]
    assert decisions(guarded)[("pre", "banned", "reject")] == before + 5


def test_pre_redacts_pii_and_rules_before_the_model(client, guarded) -> None:
    echoed = client.completions.create(
        model="gen",
        prompt=f"{PII_PROMPT} secret-42",
        max_tokens=1,
        echo=True,
        extra_headers={"X-Request-Id": "safety-redact"},
    )
    assert echoed.choices[0].text.startswith(f"{PII_SEEN} [SECRET]")
    stream = client.completions.create(
        model="gen", prompt=PII_PROMPT, max_tokens=1, echo=True, stream=True
    )
    assert next(iter(stream)).choices[0].text == PII_SEEN
    stream.close()
    # a chat with PII is the chat with the placeholders typed in, to the model: the same
    # prompt tokens and the same greedy answer
    answers = [
        client.chat.completions.create(
            model="gen",
            messages=[{"role": "user", "content": content}],
            max_tokens=6,
            temperature=0,
        )
        for content in (PII_PROMPT, PII_SEEN)
    ]
    assert answers[0].usage.prompt_tokens == answers[1].usage.prompt_tokens
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content
    with guarded.client() as http:  # TGI's full text is what the model got, too
        tgi = http.post(
            "/generate",
            json={
                "inputs": PII_PROMPT,
                "parameters": {"max_new_tokens": 1, "return_full_text": True},
            },
        )
    assert tgi.status_code == 200 and tgi.json()["generated_text"].startswith(PII_SEEN)
    # embeddings too: text with PII embeds as the text with the placeholders
    vectors = client.embeddings.create(model="emb", input=[PII_PROMPT, PII_SEEN]).data
    assert vectors[0].embedding == vectors[1].embedding

    audit = events(guarded, "safety-redact")
    rules = {(e["data"]["stage"], e["data"]["rule"], e["data"]["action"]) for e in audit}
    assert rules == {
        ("pre", "pii.email", "redact"),
        ("pre", "pii.phone", "redact"),
        ("pre", "pii.card", "redact"),
        ("pre", "secret", "redact"),
    }
    for event in audit:
        assert event["model_id"] == "gen" and event["version"] == "1"
        assert event["data"]["model"] == "gen" and event["data"]["matches"] == 1
        assert event["data"]["user"].startswith("keyhash:")  # never the key itself
    # each hook's hash is of the text it saw: the rule the prompt, PII the prompt the rule left
    hashes = {e["data"]["rule"]: e["data"]["text_sha256"] for e in audit}
    assert hashes["secret"] == [sha(f"{PII_PROMPT} secret-42")]
    assert hashes["pii.email"] == hashes["pii.card"] == [sha(f"{PII_PROMPT} [SECRET]")]
    dumped = json.dumps(audit)
    for secret in ("jane.doe", "example.com", "(555) 123", "4111 1111", "secret-42", "call"):
        assert secret not in dumped


def test_post_rejects_or_redacts_the_output(client, guarded, observed) -> None:
    outputs = observed["outputs"]
    refused(
        lambda: client.completions.create(
            model="gen",
            prompt=POST_REJECT,
            max_tokens=8,
            temperature=0,
            extra_headers={"X-Request-Id": "safety-post-reject"},
        )
    )
    redacted = client.completions.create(
        model="gen", prompt=POST_REDACT, max_tokens=8, temperature=0
    )
    literal = _literal(outputs[POST_REDACT])
    assert redacted.choices[0].text == outputs[POST_REDACT].replace(literal, "[REDACTED]")
    assert redacted.usage.completion_tokens == observed["tokens"][POST_REDACT]  # it stays
    with guarded.client() as http:  # TGI's details do not spell the redacted text out
        tgi = http.post(
            "/generate",
            json={"inputs": POST_REDACT, "parameters": {"max_new_tokens": 8, "details": True}},
        )
    assert tgi.status_code == 200, tgi.text
    assert "[REDACTED]" in tgi.json()["generated_text"]
    assert literal not in json.dumps(tgi.json(), ensure_ascii=False)
    [event] = events(guarded, "safety-post-reject")
    assert event["data"]["stage"] == "post" and event["data"]["rule"] == "out-reject"
    assert event["data"]["text_sha256"] == [sha(outputs[POST_REJECT])]


def test_a_stream_is_stopped_with_one_error_event(guarded, observed, client) -> None:
    streamed = observed["streamed"]
    _, first = stop_literal(streamed)
    texts, sent = _stream_texts(guarded, STREAMED, 16)
    assert texts == streamed[: first - 1]  # everything before the token that completed it
    errors = [e for e in sent if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and errors[0]["error"]["code"] == "content_policy"
    assert "rule 'stream-stop'" in errors[0]["error"]["message"]
    assert sent[-1] == "[DONE]" and sent[-2] == errors[0]
    assert all(c["finish_reason"] is None for e in sent[:-2] for c in e["choices"])
    # the SDK raises the error event
    with pytest.raises(openai.APIError) as caught:
        for _ in client.completions.create(
            model="gen",
            prompt=STREAMED,
            max_tokens=16,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        ):
            pass
    assert caught.value.code == "content_policy"
    assert decisions(guarded)[("during", "stream-stop", "stop")] >= 2
    # the slot was given back: the model answers again
    assert client.completions.create(model="gen", prompt="hello", max_tokens=2).choices


def test_the_classifier_refuses_above_its_threshold_when_switched_on(
    client, guarded, observed
) -> None:
    high, low = observed["high"], observed["low"]

    def ask(prompt: str, user: str | None, rid: str) -> Any:
        headers = {"X-Request-Id": rid, **({"X-User-Id": user} if user else {})}
        return client.completions.create(
            model="gen", prompt=prompt, max_tokens=1, extra_headers=headers
        )

    error = refused(lambda: ask(high, "screened", "clf-high"))
    assert "rule 'classifier'" in error.message
    assert ask(low, "screened", "clf-low").choices  # below the threshold
    assert ask(high, None, "clf-off").choices  # off by default
    [event] = events(guarded, "clf-high")
    data = event["data"]
    assert data["rule"] == "classifier" and data["action"] == "reject"
    assert data["user"] == "user:screened" and data["text_sha256"] == [sha(high)]
    assert data["score"] >= data["threshold"]
    assert events(guarded, "clf-low") == [] and events(guarded, "clf-off") == []
    # a key whose hooks are all off passes what every other key is refused
    assert ask("say kaboom", "trusted", "trusted").choices
    assert events(guarded, "trusted") == []


def test_the_classifier_stops_a_stream_beside_the_generation(serve, task_checkpoint, tmp_path):
    """``during``: the classifier runs on the text so far while tokens flow (threshold 0: any
    text is refused), for the user whose key switches it on; a stream for anyone else ends."""
    server = serve(
        models=[
            entry("gen", task_checkpoint("llama", "text_generation")),
            entry("clf", task_checkpoint("bert", "text_classification")),
        ],
        embedded_default=False,
        database_url=f"sqlite:///{tmp_path}/control.db",
        safety={
            "during_every_tokens": 2,
            "classifier": {
                "model": "clf",
                "label": "LABEL_A",
                "threshold": 0.0,
                "stages": ["during"],
                "default": False,
            },
        },
    )
    server.host.safety.switches = lambda ctx: {"classifier": ctx.user == "user:watched"}
    body = {"model": "gen", "prompt": STREAMED, "max_tokens": 16, "temperature": 0}
    body.update(stream=True, ignore_eos=True)

    def streamed(user: str) -> list[Any]:
        sent: list[Any] = []
        headers = {"X-User-Id": user}
        with (
            server.client() as http,
            http.stream("POST", "/v1/completions", json=body, headers=headers) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    data = line.removeprefix("data: ")
                    sent.append(data if data == "[DONE]" else json.loads(data))
        return sent

    watched = streamed("watched")
    errors = [e for e in watched if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and errors[0]["error"]["code"] == "content_policy"
    assert "rule 'classifier'" in errors[0]["error"]["message"] and watched[-1] == "[DONE]"
    assert decisions(server)[("during", "classifier", "stop")] == 1
    other = streamed("someone")
    assert not any(isinstance(e, dict) and "error" in e for e in other)
    assert other[-2]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_classifier_that_cannot_answer_fails_the_request_with_503(
    serve, task_checkpoint, fresh_database, backend
) -> None:
    server = serve(
        models=[entry("gen", task_checkpoint("llama", "text_generation"))],
        embedded_default=False,
        database_url=fresh_database(backend),
        safety={"classifier": {"model": "absent", "label": "toxic", "stages": ["pre"]}},
    )
    with openai.OpenAI(base_url=f"{server.base}/v1", api_key="k", max_retries=0) as sdk:
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.completions.create(
                model="gen",
                prompt="hello",
                max_tokens=1,
                extra_headers={"X-Request-Id": "clf-absent"},
            )
    assert caught.value.status_code == 503 and caught.value.code == "safety_unavailable"
    assert "'absent'" in caught.value.message
    [event] = events(server, "clf-absent")
    assert event["data"]["rule"] == "classifier" and event["data"]["action"] == "error"
