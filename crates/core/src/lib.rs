#![doc = include_str!("../README.md")]

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
pub use session::{
    AgreedExtensions, Extensions, SendBudget, Session, SessionFields, SniffOverride, Sniffing, Tag,
    User,
};
pub use stream::{AsyncStream, Counted, Prefixed, ReadAhead, Stream, Tally};
pub use transport::{
    HttpDisguise, HttpRequestHead, HttpResponseHead, Pem, StreamSettings, TlsCertificate,
    TlsSettings, TransportNetwork, WsSettings,
};
