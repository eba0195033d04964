"""The safety pipeline: hooks that check a request's text before it reaches a model (``pre``),
a stream's text while it is generated (``during``), and a model's output text (``post``).

- `settings`: the ``[safety]`` table (typed; imported by host/config.py, so it imports nothing
  else of the host).
- `rules`: regex and keyword rules, and PII redaction (emails, phone numbers, card numbers with
  the Luhn check): pure functions of text.
- `classifier`: a served text-classification model as a hook (a label's score against a
  threshold), run through the host's own `InferenceService`.
- `pipeline`: `Safety` (built from the settings) and `Guard` (one request's hooks, switched on
  or off for its key), the decisions, their audit events and their metric.

Nothing is imported here: host/config.py imports `settings` alone.
"""
