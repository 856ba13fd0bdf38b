//! The embedded store backend: a Raft-replicated key-value store (openraft + redb) inside the agent.
