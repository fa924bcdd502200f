"""LLM routes: the gateway in front of an OpenAI-compatible provider (docs/ai.md).

settings.py is the policy model (a Route's `ai:` field); request.py the request phases (route
type, model and options, provider credential, upstream endpoint); answers.py the response phases
(usage from JSON and from streams, event by event); usage.py the accounting interface other
concerns (rate limits, metrics) read."""
