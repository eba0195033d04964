"""The serving layer: one module per API family, between the routes and the core.

A route parses its request model and calls its family's function here; that function turns
the request into the core's typed work (task, inputs, params, `RequestContext`), awaits
`InferenceService`, and writes the answer in the family's exact shape, JSON or SSE. OpenAI's
and Hugging Face's routes share these functions (the per-model chat route of the Inference
API calls `openai.chat`), so no route calls another.
"""
