"""Call flows as data: the model an operator edits, its loader and its checker."""

from ivr.flow.model import Flow, FlowLoadError, load_flow, parse_flow

__all__ = ["Flow", "FlowLoadError", "load_flow", "parse_flow"]
