"""The LLM gateway: Bytez and OpenAI-compatible models behind one door, with rotating key pools."""
