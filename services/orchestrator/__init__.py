"""OrchestratorService: the multi-agent pipeline that answers a question and streams each step."""
