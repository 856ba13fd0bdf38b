//! The SocketPlane agent: store wiring, reconciler, local API and cluster port.
