//! What an isolate keeps for `/mcp` between requests: the era each `protocol: auto` upstream
//! speaks and the upstreams' listings (short TTL). Everything else is in KV.

use crate::gateway::mcp::catalog::Listings;
use crate::gateway::mcp::upstream::Eras;

#[derive(Default)]
pub struct McpState {
    pub eras: Eras,
    pub listings: Listings,
}
