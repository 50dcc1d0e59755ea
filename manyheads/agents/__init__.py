"""Agents: role + prompt + engine + what each may see."""

from manyheads.agents.agent import Agent, AgentSpec, Turn, Visibility

__all__ = ["Agent", "AgentSpec", "Turn", "Visibility"]
