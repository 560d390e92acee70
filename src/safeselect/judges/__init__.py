"""Judges: plain callables shared by evaluation and self-play (refusal, rule, classifier, llm, ...)."""
