"""Developer tools: stub generation, the demo dataset, and the stack runner."""
