"""emberd: a local embedding server speaking Ollama's and OpenAI's embedding APIs."""

__version__ = "0.1.0"
