"""llm-worker: an LLM agent worker you can stop at any moment without losing anything."""
