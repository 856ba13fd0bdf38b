//! A multi-host lab in network namespaces: hosts on a shared bridge, each running its own agent.
