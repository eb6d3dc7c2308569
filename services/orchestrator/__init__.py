"""OrchestratorService: the multi-agent pipeline that answers a question and streams each step.

servicer.py       gRPC adapter: Chat → Pipeline.chat (deadline from the caller, capped)
pipeline.py       one answer: profile → answer cache → model path or built-in fallback → final
                  (no chat state: the caller sends the history)
model_analyst.py  the model path: classifier → SQL writer → execute → self-correction → Python →
                  validator (may send back once) → composer
models.py         agent calls through the LLM gateway (prompts from the agent registry), reply retries,
                  which failures mean "no model" (fallback), key events
execution.py      ExecuteSql / RunCode with deadlines, one sql_result / python_result event per attempt
replies.py        robust parsing of model replies (JSON, SQL, Python; fenced or bare)
context.py        profile, history and result previews laid out for prompts
answers.py        composer reply, typed answer, Vega-Lite chart
streams.py        per-answer event buffers: resume by seq, cancel when every follower leaves
cache.py          answer cache keyed by (dataset hash, normalized question, history)
events.py         ChatEvent builder numbering `seq`
builtin/          the built-in deterministic analyst (no model)
"""
