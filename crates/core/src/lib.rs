//! Rayback's vocabulary: the types every other crate speaks.
//!
//! `core` sits at the bottom of the crate picture in ARCHITECTURE.md and depends on
//! no other Rayback crate. It holds what a connection *is* ([`Destination`],
//! [`Session`]), what carries its bytes ([`Stream`]), and the two handler
//! shapes ([`Outbound::connect`] and [`Outbound::handle`]) plus the
//! [`Inbound`] and [`Dispatch`] traits that tie listeners to the router.
//! It knows nothing about JSON or Mux.Cool, nor about the VMess protocol:
//! [`options`] knows the names and values of settings that `config` parses
//! and a component acts on (a VMess user's `security` among them), not
//! what they do.
//!
//! Glossary (used across the workspace):
//!
//! | word | meaning |
//! |---|---|
//! | tag | the name of an inbound, outbound, bridge or portal in the config |
//! | session | one proxied connection: where it came from, where it goes |
//! | stream | the bytes of a session: a socket, a VMess body, a mux sub-stream |
//! | packet stream | a stream of a UDP session: every packet framed by a 2-byte length (see [`packet`]) |
//! | tunnel connection | a bridge's dial-out to a portal, carrying Mux.Cool |

pub mod address;
pub mod dns;
pub mod handler;
pub mod options;
pub mod packet;
pub mod policy;
pub mod relay;
pub mod routing;
pub mod session;
pub mod stream;
pub mod transport;

pub use address::{unmap, Address, AddressError, Destination, Network};
pub use dns::{
    DnsSettings, HostMapping, HostValue, NameServerAddress, NameServerSettings, Resolve,
    ResolveFuture,
};
pub use handler::InboundContext;
pub use handler::{Dispatch, Inbound, Outbound};
pub use options::{
    BlackholeResponse, DomainStrategy, ProxyProtocol, Redirect, RedirectError, ResolveStrategy,
    RuleNetwork, RuleTarget, SocksAuth, VmessSecurity,
};
pub use policy::Policies;
pub use policy::Policy;
pub use routing::{BalancerSettings, RoutingSettings, RuleSettings};
pub use session::{SendBudget, Session, SniffOverride, Sniffing, Tag, User};
pub use stream::{AsyncStream, Prefixed, ReadAhead, Stream};
pub use transport::{
    HttpDisguise, HttpRequestHead, HttpResponseHead, Pem, StreamSettings, TlsCertificate,
    TlsSettings, TransportNetwork, WsSettings,
};
