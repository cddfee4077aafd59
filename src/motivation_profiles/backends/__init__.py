"""Generation backends behind one interface: request types and protocol, hf, vllm, the
Anthropic API, the response cache, and the factory that picks one from a model's config."""
