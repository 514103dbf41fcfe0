//! Which tunnels of a node stay Envoy connections and which are *spares* for a socket loop
//! (docs/architecture.md#spare-tunnels). Pure; one [`Keepers`] per Envoy worker.
//!
//! Rule: on each Envoy worker, a node's first accepted tunnel is its *keeper* and stays an
//! Envoy connection (requests on that worker use it without a thread hop); every further tunnel
//! of the node accepted there while the keeper lives is a spare. When the keeper closes, the next
//! tunnel of the node accepted on that worker becomes the keeper. Spares never come back.

use std::collections::HashMap;

/// Tunnels per node kept as Envoy connections on one worker.
pub const KEEPERS_PER_NODE: u32 = 1;

/// The keepers of one worker, counted per node key (`tenant:node` under tenant isolation).
#[derive(Debug, Default)]
pub struct Keepers {
    by_node: HashMap<String, u32>,
}

impl Keepers {
    /// A tunnel of `node_key` passed its handshake: true if it becomes a keeper (counted until
    /// [`Keepers::closed`]), false if it is a spare.
    pub fn admit(&mut self, node_key: &str) -> bool {
        match self.by_node.get_mut(node_key) {
            Some(n) if *n >= KEEPERS_PER_NODE => false,
            Some(n) => {
                *n += 1;
                true
            }
            None => {
                self.by_node.insert(node_key.to_string(), 1);
                true
            }
        }
    }

    /// A keeper of `node_key` closed.
    pub fn closed(&mut self, node_key: &str) {
        if let Some(n) = self.by_node.get_mut(node_key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_node.remove(node_key);
            }
        }
    }

    /// Keepers of `node_key` on this worker.
    pub fn count(&self, node_key: &str) -> u32 {
        self.by_node.get(node_key).copied().unwrap_or(0)
    }

    /// Nodes with a keeper on this worker.
    pub fn nodes(&self) -> usize {
        self.by_node.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_tunnel_of_a_node_is_its_keeper_and_the_rest_are_spares() {
        let mut k = Keepers::default();
        assert!(k.admit("a"));
        assert!(!k.admit("a"));
        assert!(!k.admit("a"));
        assert!(k.admit("b"), "each node has its own keeper");
        assert!(k.admit("t1:a"), "tenant-qualified keys are other nodes");
        assert_eq!((k.count("a"), k.nodes()), (1, 3));
    }

    #[test]
    fn a_closed_keeper_is_replaced_by_the_next_tunnel_and_forgotten_when_none_is_left() {
        let mut k = Keepers::default();
        assert!(k.admit("a"));
        assert!(!k.admit("a"));
        k.closed("a");
        assert_eq!((k.count("a"), k.nodes()), (0, 0));
        assert!(k.admit("a"));
        k.closed("zzz"); // unknown: no effect
        k.closed("a");
        k.closed("a"); // twice: no underflow
        assert_eq!(k.count("a"), 0);
    }
}
