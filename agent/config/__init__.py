"""Configuration: agent.toml and models.d/NAME.toml, their schema, the lock, names,
paths and ports, credentials, and the desired state: everything the three processes read alike.

Nothing here imports pydantic at package level: `status` imports paths and names cheaply.
"""
